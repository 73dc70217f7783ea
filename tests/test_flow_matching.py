"""Flow matching: the paths' marginals, the ODE likelihood against a Gaussian's
closed form, Hutchinson's divergence against the exact one, the samplers'
orders and counted network evaluations, guidance, and training on a 2-D mixture."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import config_check, parallel
from genjax.data import Dataset
from genjax.errors import ConfigError
from genjax.experiments import flow_matching as fm_config
from genjax.families import flow_matching
from genjax.families.flow_matching import model, paths
from genjax.ode import likelihood, solvers

MU = jnp.array([1.5, -0.5, 0.2])
STD = jnp.array([0.6, 1.3, 0.9])


def gaussian_velocity(path, mu, std):
  """E[u_t | x_t] for data N(mu, diag(std^2)) on `path`: x_t and u_t are jointly
  Gaussian, so with m = alpha mu, v = alpha^2 std^2 + sigma^2 (the law of x_t)
  E[u_t | x_t = x] = alpha' mu + (alpha' alpha std^2 + sigma' sigma) / v (x - m)."""
  def field(x, t):
    alpha, sigma, d_alpha, d_sigma = paths.coefficients(path, t)
    var = alpha ** 2 * std ** 2 + sigma ** 2
    return d_alpha * mu + (d_alpha * alpha * std ** 2 + d_sigma * sigma) / var * (x - alpha * mu)

  return field


def gaussian_logpdf(x, mu, std):
  return jnp.sum(-0.5 * ((x - mu) / std) ** 2 - jnp.log(std) - 0.5 * np.log(2 * np.pi), -1)


@pytest.mark.parametrize('path', paths.PATHS)
def test_path_marginals_match_closed_form(path):
  """x_t for Gaussian data has mean alpha_t mu and variance alpha_t^2 std^2 +
  sigma_t^2; 40,000 draws at each of 5 random t: means within 5 standard
  errors, variances within 5%. The straight path's target is x1 - x0."""
  N = 40000
  k0, k1, kt = jax.random.split(jax.random.PRNGKey(0), 3)
  for t in jax.random.uniform(kt, (5,)):
    x0 = jax.random.normal(jax.random.fold_in(k0, int(1e6 * t)), (N, 3))
    x1 = MU + STD * jax.random.normal(jax.random.fold_in(k1, int(1e6 * t)), (N, 3))
    x_t, u_t = paths.interpolate(path, x0, x1, jnp.full((N,), t))
    alpha, sigma, _, _ = paths.coefficients(path, t)
    var = alpha ** 2 * STD ** 2 + sigma ** 2
    np.testing.assert_array_less(np.abs(x_t.mean(0) - alpha * MU), 5 * np.sqrt(var / N))
    np.testing.assert_allclose(x_t.var(0), var, rtol=0.05)
    if path == 'straight':
      np.testing.assert_allclose(u_t, x1 - x0, atol=1e-6)
  # The ends: noise at t = 0, data at t = 1.
  a0, s0, _, _ = paths.coefficients(path, 0.0)
  a1, s1, _, _ = paths.coefficients(path, 1.0)
  np.testing.assert_allclose([a0, s0, a1, s1], [0, 1, 1, 0], atol=1e-6)


@pytest.mark.parametrize('path', paths.PATHS)
def test_ode_likelihood_of_the_optimal_field_is_the_gaussian_density(path):
  """The closed-form optimal field of Gaussian data, integrated with RK4 in 64
  steps from t = 1 to 0 with the exact divergence (trace of jacfwd), gives the
  data's analytic log-density within 1e-3 nats, points in and far out of the bulk."""
  x = MU + STD * jax.random.normal(jax.random.PRNGKey(1), (16, 3)) * jnp.linspace(0.2, 3, 16)[:, None]
  field = gaussian_velocity(path, MU, STD)
  log_p, se, _ = jax.jit(lambda x: likelihood.log_likelihood(field, x, steps=64,
                                                             divergence='exact'))(x)
  np.testing.assert_allclose(log_p, gaussian_logpdf(x, MU, STD), atol=1e-3)
  assert np.all(se == 0)
  # The wrong data law is told apart: a density off by more than the tolerance.
  wrong = gaussian_logpdf(x, MU, 1.1 * STD)
  assert np.max(np.abs(log_p - wrong)) > 1e-2


def random_field(D=6, H=32, seed=0):
  """A nonlinear, time-dependent field whose Jacobian is far from diagonal."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  W1 = jax.random.normal(k1, (D, H)) / np.sqrt(D)
  W2 = jax.random.normal(k2, (H, D)) / np.sqrt(H)
  b = jax.random.normal(k3, (H,))
  return lambda x, t: jnp.tanh(x @ W1 + t * b) @ W2 - 0.3 * x


def test_hutchinson_agrees_with_the_exact_divergence_within_its_standard_error():
  """At one time, and integrated over the ODE (RK4, 8 steps): Hutchinson's
  estimate with 64 Rademacher probes is within 4 of its reported standard
  errors of the exact value, for each of 8 examples, and the error is not 0."""
  D, B, K = 6, 8, 64
  field = random_field(D)
  x = jax.random.normal(jax.random.PRNGKey(2), (B, D))
  probes = likelihood.rademacher(jax.random.PRNGKey(3), (K, B, D))
  exact_div = likelihood.exact_divergence(field, x, 0.4)
  v, est = likelihood.hutchinson_divergence(field, x, 0.4, probes)
  np.testing.assert_allclose(v, field(x, 0.4), atol=1e-6)
  se_div = est.std(1, ddof=1) / np.sqrt(K)
  np.testing.assert_array_less(np.abs(est.mean(1) - exact_div), 4 * se_div)

  exact, zero, _ = likelihood.log_likelihood(field, x, steps=8, divergence='exact')
  hutch, se, _ = likelihood.log_likelihood(field, x, steps=8, divergence='hutchinson',
                                           probes_KxB=probes)
  assert np.all(zero == 0) and np.all(se > 0)
  np.testing.assert_array_less(np.abs(hutch - exact), 4 * se)
  assert np.max(np.abs(hutch - exact)) > 0


def counted(field):
  """`field` that adds one to calls[0] each time it runs (a host callback, so
  every iteration of a compiled loop counts, not only the trace)."""
  calls = [0]

  def bump():
    calls[0] += 1

  def wrapped(x, t):
    jax.debug.callback(bump)
    return field(x, t)

  return wrapped, calls


@pytest.mark.parametrize('solver', sorted(solvers.STAGES))
@pytest.mark.parametrize('steps', [1, 5])
def test_each_solver_reports_the_evaluations_it_makes(solver, steps):
  field, calls = counted(lambda x, t: -x * t)
  y, _, evals = jax.jit(lambda y: solvers.solve(field, y, solver=solver, steps=steps))(
      jnp.ones((4, 2)))
  jax.block_until_ready(y)
  jax.effects_barrier()
  assert evals == calls[0] == solvers.network_evals(solver, steps)
  assert evals == {'euler': steps, 'heun': 2 * steps - 1, 'rk4': 4 * steps}[solver]


@pytest.mark.parametrize('t0,t1', [(0.0, 1.0), (1.0, 0.0)])
def test_dopri5_reports_the_evaluations_it_makes(t0, t1):
  """The count dopri5 reports (1 + 6 per step tried, from diffrax's stats) is
  the calls of the field counted while it runs, forwards and backwards, at
  tolerances that take different numbers of steps (a first step of half the
  way, which these tolerances reject, and later rejections)."""
  field, calls = counted(lambda y, t: jnp.cos(10 * t) * 3 * y)
  run = jax.jit(lambda y, tol: solvers.solve(field, y, solver='dopri5', steps=2, t0=t0, t1=t1,
                                             rtol=tol, atol=tol))
  counts = set()
  for tol in (1e-2, 1e-4, 1e-7):
    calls[0] = 0
    y, _, evals = run(jnp.ones((4, 2)), tol)
    jax.block_until_ready(y)
    jax.effects_barrier()
    assert int(evals) == calls[0]
    counts.add(calls[0])
  assert len(counts) == 3 and solvers.network_evals('dopri5', 2) is None


@pytest.mark.parametrize('path', paths.PATHS)
def test_dopri5_sample_and_likelihood_match_the_closed_form(path):
  """On the Gaussian's optimal field, noise x0 flows to mu + std x0 and the
  likelihood (exact divergence, from t = 1 to 0) is the Gaussian's density:
  at rtol = atol = tol in (1e-3, 1e-5), each within 30 (tol + tol |exact|),
  and the tighter tolerance costs more evaluations."""
  field = gaussian_velocity(path, MU, STD)
  x0 = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
  x = MU + STD * jax.random.normal(jax.random.PRNGKey(1), (16, 3)) * jnp.linspace(0.2, 3, 16)[:, None]
  within = lambda got, want, tol: np.testing.assert_array_less(
      np.abs(got - want), 30 * tol * (1 + np.abs(want)))
  sample = jax.jit(lambda y, tol: solvers.solve(field, y, solver='dopri5', steps=4, rtol=tol,
                                                 atol=tol))
  log_lik = jax.jit(lambda x, tol: likelihood.log_likelihood(
      field, x, steps=4, divergence='exact', solver='dopri5', rtol=tol, atol=tol))
  evals = []
  for tol in (1e-3, 1e-5):
    x1, _, n_sample = sample(x0, tol)
    within(x1, MU + STD * x0, tol)
    log_p, _, n_lik = log_lik(x, tol)
    within(log_p, gaussian_logpdf(x, MU, STD), tol)
    evals.append((int(n_sample), int(n_lik)))
  assert evals[1][0] > evals[0][0] and evals[1][1] > evals[0][1], evals


@pytest.mark.parametrize('solver,order,steps', [('euler', 1, 8), ('heun', 2, 32), ('rk4', 4, 2)])
def test_solvers_converge_at_their_order(solver, order, steps):
  """dy/dt = cos(t) y from y(0) = 1, so y(1) = exp(sin 1): doubling the steps
  divides the error by about 2^order (Heun from 32 steps, where its final
  Euler step's error has reached its h^2 rate; RK4 from 2, before float32
  rounding dominates its error); the trajectory starts at y(0) and ends at y(1)."""
  f = lambda y, t: jnp.cos(t) * y
  y1 = np.exp(np.sin(1.0))
  run = lambda n: solvers.solve(f, jnp.ones(()), solver=solver, steps=n, keep_path=True)
  (a, path, _), (b, _, _) = run(steps), run(2 * steps)
  ratio = abs(float(a) - y1) / abs(float(b) - y1)
  assert 2 ** order * 0.7 < ratio < 2 ** order * 1.4, ratio
  assert path.shape == (steps + 1,) and float(path[0]) == 1.0 and float(path[-1]) == float(a)
  # Backwards from y(1) returns to y(0).
  back, _, _ = solvers.solve(f, jnp.asarray(y1, jnp.float32), solver='rk4', steps=16, t0=1.0,
                             t1=0.0)
  np.testing.assert_allclose(back, 1.0, atol=1e-5)


def correlated_gaussian_velocity(path, mu, cov):
  """E[u_t | x_t] for data N(mu, cov): as gaussian_velocity, with matrices."""
  eye = jnp.eye(len(mu))

  def field(x, t):
    alpha, sigma, d_alpha, d_sigma = paths.coefficients(path, t)
    var = alpha ** 2 * cov + sigma ** 2 * eye
    cross = d_alpha * alpha * cov + d_sigma * sigma * eye
    return d_alpha * mu + (x - alpha * mu) @ jnp.linalg.solve(var, cross.T)

  return field


@pytest.mark.parametrize('path', paths.PATHS)
def test_inpainting_field_draws_near_the_conditional(path):
  """2-D Gaussian data, correlation 0.9, the first coordinate known to be 1.5:
  the conditional of the second is N(1.35, 0.436^2). The guided ODE (Euler,
  50 steps) ends with the known coordinate at its value, and the other's mean
  and std within 0.15 and 0.1 of the conditional's (the guidance's Gaussian
  has the variance of unit data, not the posterior's, so it is approximate;
  the unguided field would leave the mean at 0, 1.35 away)."""
  rho, known_value = 0.9, 1.5
  cov = jnp.array([[1.0, rho], [rho, 1.0]])
  field = correlated_gaussian_velocity(path, jnp.zeros(2), cov)
  known = jnp.array([True, False])
  y = jnp.array([known_value, 0.0])
  x0 = jax.random.normal(jax.random.PRNGKey(0), (20_000, 2))
  x, _, _ = solvers.solve(paths.inpainting_field(field, path, y, known), x0, solver='euler',
                          steps=50)
  np.testing.assert_allclose(x[:, 0], known_value, atol=1e-2)
  assert abs(float(x[:, 1].mean()) - rho * known_value) < 0.15, float(x[:, 1].mean())
  assert abs(float(x[:, 1].std()) - np.sqrt(1 - rho ** 2)) < 0.1, float(x[:, 1].std())


@pytest.mark.parametrize('path', paths.PATHS)
def test_posterior_mean_is_the_data_where_the_path_ends(path):
  """E[x1 | x_t] of a point mass at c is c at every t, from the exact field."""
  c = jnp.array([0.7, -1.2])
  field = correlated_gaussian_velocity(path, c, jnp.zeros((2, 2)))
  x = jax.random.normal(jax.random.PRNGKey(1), (5, 2))
  for t in (0.1, 0.5, 0.9):
    x_t = x * paths.coefficients(path, t)[1] + c * paths.coefficients(path, t)[0]
    np.testing.assert_allclose(paths.posterior_mean(path, x_t, field(x_t, t), t),
                               jnp.broadcast_to(c, x.shape), atol=1e-5)


def smoke_family(variant, **overrides):
  c = fm_config.get_config(f'{variant},smoke')
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split('.')
    node = c
    for p in parents:
      node = node[p]
    node[leaf] = value
  data = Dataset(c.data, seed=c.seed)
  return c, data, flow_matching.build(c, data.info)


def count_network_calls(monkeypatch):
  """[n]: the velocity network's calls, counted on the host while compiled code runs."""
  calls = [0]
  real = model.velocity

  def velocity(*args, **kwargs):
    jax.debug.callback(lambda: calls.__setitem__(0, calls[0] + 1))
    return real(*args, **kwargs)

  monkeypatch.setattr(model, 'velocity', velocity)
  return calls


def test_guided_sampling_counts_two_passes_per_evaluation(monkeypatch):
  """The family's nfe (what the comparison reports) equals the network calls
  that `generate` makes, counted while it runs: twice per solver evaluation
  under guidance, once without."""
  calls = count_network_calls(monkeypatch)
  _, data, fam = smoke_family('digits', **{'sample.solver': 'euler', 'sample.steps': 2})
  state = fam.init(jax.random.PRNGKey(0), data.train_batch(0))
  for scale, passes in ((2.0, 2), (0.0, 1)):
    calls[0] = 0
    out = fam.sample(state, jax.random.PRNGKey(1), 3, scale=scale)
    jax.effects_barrier()
    assert calls[0] == fam.tools['nfe'](scale=scale) == passes * 2
    assert out['image'].shape == (3,) + tuple(data.info.shape) and out['label'].shape == (3,)


def test_dopri5_draw_reports_the_network_calls(monkeypatch):
  """tools['draw'] with sample.solver='dopri5' returns as its evaluations the
  network calls counted while it samples (ring8, unguided); nfe cannot know
  them beforehand."""
  calls = count_network_calls(monkeypatch)
  _, data, fam = smoke_family('ring8', **{'sample.solver': 'dopri5', 'sample.rtol': 1e-4,
                                          'sample.atol': 1e-4})
  state = fam.init(jax.random.PRNGKey(0), data.train_batch(0))
  out, evals = fam.tools['draw'](state, jax.random.PRNGKey(1), 32)
  jax.effects_barrier()
  assert evals == calls[0] > 1 and out['x'].shape == (32, 2) and np.isfinite(out['x']).all()
  assert fam.tools['nfe']() is None and fam.tools['network_evals'] is None


def test_training_on_a_2d_mixture_lowers_the_loss():
  """ring8 with the smoke MLP, batch 256, 150 steps: the mean loss of the last
  20 steps is below the first 20's by a margin the noise does not reach."""
  _, data, fam = smoke_family('ring8', **{'data.batch_size': 256, 'train.num_steps': 150,
                                          'optim.lr': 3e-3})
  state = fam.init(jax.random.PRNGKey(0), data.train_batch(0))
  step = parallel.train_step(fam.train_step, devices=jax.devices('cpu')[:1])
  rstate, losses = parallel.replicate(state, 1), []
  for s in range(150):
    rstate, m = step(rstate, parallel.shard(data.train_batch(s), 1), jax.random.PRNGKey(s))
    losses.append(float(m['loss']))
  assert np.isfinite(losses).all()
  first, last = np.mean(losses[:20]), np.mean(losses[-20:])
  assert last < first - 0.1, (first, last)


def test_bad_solver_path_divergence_and_tolerance_are_named():
  for field, value in (('sample.solver', 'midpoint'), ('flow_matching.path', 'cosine'),
                       ('flow_matching.divergence', 'skilling'),
                       ('flow_matching.eval_solver', 'midpoint'), ('sample.rtol', -1e-5)):
    c = fm_config.get_config('ring8,smoke')
    *parents, leaf = field.split('.')
    c[parents[0]][leaf] = value
    with pytest.raises(ConfigError, match=f'{field}={value!r}'):
      config_check.check(c)
