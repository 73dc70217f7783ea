"""Diffusion family: forward process, posterior, bound, samplers, guidance,
inpainting, and training on real digits."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import ndtr

from genjax.experiments import diffusion as diffusion_config
from genjax import parallel
from genjax.data import Dataset
from genjax.errors import ConfigError
from genjax.families import base, diffusion
from genjax.families.diffusion import losses, networks, samplers, schedules


@pytest.mark.parametrize('name', ['linear', 'cosine'])
def test_forward_marginal_matches_closed_form(name):
  """x_t from T single steps x_t = sqrt(1-b_t) x_{t-1} + sqrt(b_t) n has the
  closed-form mean sqrt(abar_t) x_0 and variance 1 - abar_t, and q_sample draws
  it. 20,000 draws: means within 5 standard errors, variances within 5%."""
  T, N = 50, 20000
  sched = schedules.Schedule.make(name, T)
  x0 = jnp.array([-1.0, 0.3, 0.9])
  keys = jax.random.split(jax.random.PRNGKey(0), T)

  def chain(x, xs):
    b, k = xs
    x = jnp.sqrt(1 - b) * x + jnp.sqrt(b) * jax.random.normal(k, x.shape)
    return x, x

  _, path = jax.lax.scan(chain, jnp.broadcast_to(x0, (N, 3)), (sched.beta[1:], keys))
  for t in (1, 10, 30, 50):
    alpha, sigma = sched.alpha_sigma(t)
    for draws in (path[t - 1], schedules.q_sample(
        sched, jnp.broadcast_to(x0, (N, 3)), jnp.full((N,), t), jax.random.normal(keys[t - 1], (N, 3)))):
      se = sigma / np.sqrt(N)
      np.testing.assert_array_less(np.abs(draws.mean(0) - alpha * x0), 5 * se + 1e-6)
      np.testing.assert_allclose(draws.var(0), sigma ** 2 * np.ones(3), rtol=0.05)


def test_posterior_matches_bayes_and_monte_carlo():
  """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): product of Gaussians,
  and by simulation the residual has that variance and is uncorrelated with x_t."""
  sched = schedules.Schedule.make('linear', 100)
  x0 = jnp.float32(0.4)
  for t in (2, 40, 100):
    ab_s, b = sched.alpha_bar[t - 1], sched.beta[t]
    prec = 1 / (1 - ab_s) + (1 - b) / b
    xt = jnp.float32(-0.7)
    want_mean = (jnp.sqrt(ab_s) * x0 / (1 - ab_s) + jnp.sqrt(1 - b) * xt / b) / prec
    mean, var = schedules.posterior(sched, x0[None], xt[None], jnp.array([t]))
    np.testing.assert_allclose(mean[0], want_mean, rtol=1e-4)
    np.testing.assert_allclose(var[0], 1 / prec, rtol=1e-4)
    # Monte Carlo on the joint (x_{t-1}, x_t) given x_0.
    N = 200000
    k1, k2 = jax.random.split(jax.random.PRNGKey(t))
    xs = jnp.sqrt(ab_s) * x0 + jnp.sqrt(1 - ab_s) * jax.random.normal(k1, (N,))
    xt_N = jnp.sqrt(1 - b) * xs + jnp.sqrt(b) * jax.random.normal(k2, (N,))
    m, v = schedules.posterior(sched, jnp.full((N,), x0), xt_N, jnp.full((N,), t))
    r = xs - m
    assert abs(float(r.mean())) < 5 * np.sqrt(float(v[0]) / N)
    np.testing.assert_allclose(r.var(), v[0], rtol=0.02)
    assert abs(float(jnp.corrcoef(r, xt_N)[0, 1])) < 0.01


def test_posterior_variance_weight_is_the_kl():
  """KL between the posterior and p with the same variance and mean from
  x0_hat equals w_t ||eps - eps_hat||^2 (the bound's weight)."""
  sched = schedules.Schedule.make('cosine', 200)
  x0, x0_hat, xt = jnp.array([0.3]), jnp.array([0.1]), jnp.array([0.5])
  t = jnp.array([37])
  mq, var = schedules.posterior(sched, x0, xt, t)
  mp, _ = schedules.posterior(sched, x0_hat, xt, t)
  kl = (mq - mp) ** 2 / (2 * var)
  alpha, sigma = sched.alpha_sigma(t)
  eps_err = (alpha / sigma * (x0 - x0_hat)) ** 2
  np.testing.assert_allclose(kl, schedules.diffusion_term_weight(sched, t) * eps_err, rtol=1e-4)


def test_log_snr_proposal_estimate_is_unbiased():
  """E_{t~p}[w_t f(t) / p_t] = sum_{t=2..T} w_t f(t), by enumeration."""
  sched = schedules.Schedule.make('linear', 1000)
  p = schedules.log_snr_proposal(sched)
  t = jnp.arange(2, 1001)
  f = jnp.cos(t / 70.0) ** 2 + 0.1
  w = schedules.diffusion_term_weight(sched, t)
  np.testing.assert_allclose((p[t] * w * f / p[t]).sum(), (w * f).sum(), rtol=1e-5)
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-5)
  # Inverse-CDF draws at evenly spaced uniforms reproduce p.
  draws = schedules.sample_t(p, (jnp.arange(100000) + 0.5) / 100000)
  np.testing.assert_allclose(jnp.bincount(draws, length=1001) / 100000, p, atol=2e-5)


def constant_denoiser(sched, c):
  """`apply` of a denoiser that says x0 = c for each example whatever z (c is tiled
  over a batch that repeats the examples, as the bound's draws of t do)."""
  def apply(params, z, t_N, label, train=False, rng=None):
    del params, label, train, rng
    alpha, sigma = sched.alpha_sigma(t_N)
    alpha, sigma = schedules._bcast(alpha, z), schedules._bcast(sigma, z)  # pylint: disable=protected-access
    x0 = jnp.tile(c, (z.shape[0] // c.shape[0],) + (1,) * (c.ndim - 1))
    return x0, (z - alpha * x0) / sigma
  return apply


def short_schedule(T=20):
  """(schedule, betas (T,) float64) that stops at alpha_bar_T ~ 0.5, so that every
  term of the bound is sizeable."""
  beta = np.linspace(0.02, 0.05, T)
  b = np.concatenate([[0.0], beta])
  ab = np.cumprod(1.0 - b)
  with np.errstate(divide='ignore'):
    log_snr = np.log(ab) - np.log1p(-ab)
  return schedules.Schedule(*(jnp.asarray(a, jnp.float32) for a in (b, ab, log_snr))), beta


def closed_form(beta, x0, c):
  """By hand in float64, for the denoiser x0_hat = c and betas (T,): the prior KL
  (B,), the SNR table (T+1,), and sum_{t=2..T} KL(q(x_{t-1}|x_t,x_0) ||
  p(x_{t-1}|x_t)) (B,): both Gaussians have the posterior's variance, and their
  means differ by c0_t (x0 - c) whatever x_t."""
  T = len(beta)
  beta = np.concatenate([[0.0], beta])
  ab = np.cumprod(1.0 - beta)
  x0, c = np.asarray(x0, np.float64), np.asarray(c, np.float64)
  per = lambda a: a.reshape(len(a), -1).sum(-1)
  prior = per(0.5 * (1 - ab[T] + ab[T] * x0 ** 2 - 1 - np.log(1 - ab[T])))
  t = np.arange(2, T + 1)
  c0 = np.sqrt(ab[t - 1]) * beta[t] / (1 - ab[t])
  var = beta[t] * (1 - ab[t - 1]) / (1 - ab[t])
  diffusion_kl = (c0 ** 2 / (2 * var)).sum() * per((x0 - c) ** 2)
  with np.errstate(divide='ignore'):
    snr = ab / (1 - ab)
  return prior, snr, diffusion_kl


def test_eps_error_of_a_constant_denoiser_is_the_snr_times_the_x0_error():
  """eps - eps_hat = (alpha / sigma)(c - x0) for x0_hat = c, whatever the noise."""
  sched, beta = short_schedule()
  x0 = jnp.array([[0.5, -0.3], [0.0, 1.0], [-1.0, 0.2]])
  c = jnp.array([[0.1, 0.1], [0.3, 0.9], [-0.5, 0.0]])
  t = jnp.array([1, 7, 20])
  eps = jax.random.normal(jax.random.PRNGKey(0), x0.shape)
  got = losses.eps_error(constant_denoiser(sched, c), sched, None, x0, t, eps, None)
  _, snr, _ = closed_form(beta, x0, c)
  np.testing.assert_allclose(got, snr[np.asarray(t)] * ((x0 - c) ** 2).sum(-1), rtol=1e-4)


def test_bound_terms_match_the_closed_form():
  """prior: the KL of Gaussians; decoder: the Gaussian's mass on each level's bin
  (normal CDFs); diffusion: the sum of the T - 1 KLs, estimated from draws of t."""
  from scipy.special import ndtr as ndtr64  # pylint: disable=g-import-not-at-top
  L, K = 5, 2000
  sched, beta = short_schedule()
  proposal = schedules.log_snr_proposal(sched)
  x0 = jnp.array([-1.0, -0.5, 0.0, 0.5, 1.0, 0.5, 0.0, -0.5]).reshape(2, 2, 2, 1)
  c = x0 + jnp.array([0.05, -0.1, 0.08, 0.02, -0.06, 0.1, -0.03, 0.0]).reshape(2, 2, 2, 1)
  keys = base.example_keys(jax.random.PRNGKey(1), 2)
  index = jnp.arange(2)
  prior_want, _, diff_want = closed_form(beta, x0, c)
  apply = constant_denoiser(sched, c)
  prior, decoder, diff = losses.bound_terms(apply, sched, proposal, None, x0, None, keys, index,
                                            2, jax.random.PRNGKey(2), t_samples=K, num_levels=L)
  np.testing.assert_allclose(prior, prior_want, rtol=1e-4)
  # The 2 x 2000 draws of t are stratified over both examples together, so it is
  # their mean of the diffusion term per unit of ||x0 - c||^2 that is close to exact.
  d2 = np.asarray(((x0 - c) ** 2).reshape(2, -1).sum(-1), np.float64)
  np.testing.assert_allclose(np.mean(diff / d2), np.mean(diff_want / d2), rtol=1e-2)
  # The decoder at t = 1: N(c, beta_1) integrated over [x - h, x + h], the end bins unbounded.
  s, h = np.sqrt(beta[0]), 1.0 / (L - 1)
  x, m = np.asarray(x0, np.float64), np.asarray(c, np.float64)
  p = ndtr64((x + h - m) / s) - ndtr64((x - h - m) / s)
  p = np.where(x == -1, ndtr64((x + h - m) / s), np.where(x == 1, 1 - ndtr64((x - h - m) / s), p))
  np.testing.assert_allclose(decoder, -np.log(p).reshape(2, -1).sum(-1), rtol=1e-4)
  # Points: a Gaussian density of the data in its own units, x = point_scale * x0.
  _, decoder, _ = losses.bound_terms(apply, sched, proposal, None, x0, None, keys, index, 2,
                                     jax.random.PRNGKey(2), t_samples=1, num_levels=0,
                                     point_scale=2.0)
  want = 0.5 * ((x - m) / s) ** 2 + np.log(s) + 0.5 * np.log(2 * np.pi) + np.log(2.0)
  np.testing.assert_allclose(decoder, want.reshape(2, -1).sum(-1), rtol=1e-4)


def test_train_losses_estimate_their_closed_forms():
  """Over 4000 copies of one example (t stratified over them): 'eps_mse' is the mean
  over t = 1..T of SNR_t ||x0 - c||^2, 'vlb' the sum of the bound's KLs, 'hybrid'
  the first plus hybrid_weight times the second; all per dimension."""
  B = 4000
  sched, beta = short_schedule()
  proposal = schedules.log_snr_proposal(sched)
  x0 = jnp.tile(jnp.array([[0.4, -0.2, 0.9]]), (B, 1))
  c = jnp.tile(jnp.array([[0.3, 0.0, 0.8]]), (B, 1))
  _, snr, diff = closed_form(beta, x0[:1], c[:1])
  d2 = float(((x0[0] - c[0]) ** 2).sum())
  want = {'eps_mse': snr[1:].mean() * d2 / 3, 'vlb': diff[0] / 3}
  want['hybrid'] = want['eps_mse'] + 0.5 * want['vlb']
  keys = base.example_keys(jax.random.PRNGKey(3), B)
  for kind, value in want.items():
    got = losses.train_loss(constant_denoiser(sched, c), sched, proposal, None, x0, None, keys,
                            jnp.arange(B), B, jax.random.PRNGKey(4), kind=kind,
                            hybrid_weight=0.5)
    np.testing.assert_allclose(got, value, rtol=2e-2, err_msg=kind)
  with pytest.raises(ConfigError, match='diffusion.loss'):
    losses.train_loss(constant_denoiser(sched, c), sched, proposal, None, x0, None, keys,
                      jnp.arange(B), B, jax.random.PRNGKey(4), kind='mse')


def test_discretized_decoder_sums_to_one_and_matches_cdf():
  L = 17
  levels = jnp.linspace(-1, 1, L)
  mean, std = jnp.float32(0.23), jnp.float32(0.2)
  nll = schedules.discretized_gaussian_nll(levels[:, None], jnp.full((L, 1), mean), std, L)
  np.testing.assert_allclose(jnp.exp(-nll).sum(), 1.0, rtol=1e-5)
  h = 1 / (L - 1)
  np.testing.assert_allclose(jnp.exp(-nll[8]), ndtr((h - mean) / std) - ndtr((-h - mean) / std),
                             rtol=1e-5)


def test_lattice_head_rounds_at_low_noise():
  levels = jnp.linspace(-1, 1, 17)
  x0 = levels[jnp.array([0, 3, 8, 16])].reshape(1, 2, 2, 1)
  alpha, sigma = jnp.float32(0.9999), jnp.float32(0.01)
  z = alpha * x0 + sigma * jnp.array([0.5, -1.0, 2.0, 1.5]).reshape(1, 2, 2, 1)
  logits = jnp.zeros((1, 2, 2, 1, 17))
  np.testing.assert_allclose(networks.lattice_x0(logits, z, alpha, sigma), x0, atol=1e-4)


def toy_predict(sched, calls=None):
  """A fixed linear denoiser, x0_hat = 0.5 z / alpha, counting its traces."""
  def predict(z, t_N):
    if calls is not None:
      calls.append(1)
    alpha, sigma = sched.alpha_sigma(t_N)
    alpha, sigma = schedules._bcast(alpha, z), schedules._bcast(sigma, z)  # pylint: disable=protected-access
    x0 = 0.5 * z / alpha
    return x0, (z - alpha * x0) / sigma
  return predict


@pytest.mark.parametrize('sampler', ['ddpm', 'ddim', 'inpaint'])
def test_each_sampler_is_one_compiled_loop(sampler):
  sched = schedules.Schedule.make('linear', 40)
  calls = []
  z = jnp.zeros((2, 4, 4, 1))

  def run(z, rng):
    predict = toy_predict(sched, calls)
    if sampler == 'ddpm':
      return samplers.ddpm(predict, sched, z, rng)
    if sampler == 'ddim':
      return samplers.ddim(predict, sched, z, rng, samplers.ddim_timesteps(40, 10))
    return samplers.ddpm(predict, sched, z, rng, known=(z > 0, z))

  jaxpr = jax.make_jaxpr(run)(z, jax.random.PRNGKey(0))
  assert any(e.primitive.name == 'scan' for e in jaxpr.jaxpr.eqns)
  assert len(calls) == 1  # the denoiser is traced once: its steps are a loop, not unrolled
  calls.clear()
  jitted = jax.jit(run)
  jitted(z, jax.random.PRNGKey(1))
  jitted(z + 1, jax.random.PRNGKey(2))
  assert len(calls) <= 1 and jitted._cache_size() == 1  # one trace for both calls  # pylint: disable=protected-access


def test_ddim_eta0_is_deterministic_given_the_noise():
  sched = schedules.Schedule.make('cosine', 100)
  z = jax.random.normal(jax.random.PRNGKey(0), (3, 5))
  ts = samplers.ddim_timesteps(100, 10)
  run = lambda rng, eta: samplers.ddim(toy_predict(sched), sched, z, rng, ts, eta, clip=False)
  a, b = run(jax.random.PRNGKey(1), 0.0), run(jax.random.PRNGKey(2), 0.0)
  np.testing.assert_array_equal(a, b)
  assert np.abs(run(jax.random.PRNGKey(1), 1.0) - run(jax.random.PRNGKey(2), 1.0)).max() > 1e-3
  # Data that is a point mass at c: the exact denoiser says x0 = c, so eps_hat
  # stays constant along the eta=0 path and 10 steps land exactly on c.
  c = jnp.linspace(-0.5, 0.5, 5)
  point = lambda zz, t_N: (jnp.broadcast_to(c, zz.shape), (zz - schedules._bcast(  # pylint: disable=protected-access
      sched.alpha_sigma(t_N)[0], zz) * c) / schedules._bcast(sched.alpha_sigma(t_N)[1], zz))  # pylint: disable=protected-access
  out = samplers.ddim(point, sched, z, jax.random.PRNGKey(3), ts, 0.0, clip=False)
  np.testing.assert_allclose(out, jnp.broadcast_to(c, z.shape), atol=1e-5)


def tiny_config(variant='digits'):
  c = diffusion_config.get_config(variant + ',smoke')
  c.model.num_steps = 50
  return c


@functools.lru_cache(maxsize=None)
def tiny_family(variant='digits'):
  c = tiny_config(variant)
  data = Dataset(c.data, seed=0)
  fam = diffusion.build(c, data.info)
  batch = data.train_batch(0)
  state = fam.init(jax.random.PRNGKey(0), batch)
  return c, data, fam, state


def test_guidance_scale_zero_is_the_unconditional_prediction():
  _, data, fam, state = tiny_family()
  apply, params = jax.jit(fam.tools['apply']), state.params  # eager, each op compiles alone
  # Random weights everywhere (the head starts at zero), so labels matter.
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
  params = jax.tree_util.tree_unflatten(
      tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  z = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
  t = jnp.full((4,), 20)
  label = jnp.array([0, 3, 5, 9])
  null = jnp.full((4,), 10)
  _, eps_u = apply(params, z, t, null)
  _, eps_c = apply(params, z, t, label)
  assert np.abs(eps_u - eps_c).max() > 1e-4
  for scale in (0.0, 1e-7, 2.5):
    _, eps = samplers.guided(apply, params, label, scale, 10, 10)[0](z, t)
    np.testing.assert_allclose(eps, eps_u + scale * (eps_c - eps_u), atol=1e-5)


def test_inpainting_leaves_known_pixels_unchanged():
  _, data, fam, state = tiny_family()
  batch = next(data.eval_batches('validation', max_batches=1))
  image, label = batch['image'][:3], batch['label'][:3]
  mask = np.zeros(image.shape, bool)
  mask[:, :4] = True
  out = fam.tools['figures'].inpaint(state.ema_params, jax.random.PRNGKey(0), image, mask, label)
  np.testing.assert_array_equal(out[mask], image[mask].astype(np.float32))
  assert np.all((out >= 0) & (out <= 16)) and np.abs(out[~mask] - image[~mask]).max() > 0


def test_training_lowers_the_loss_and_the_bound_on_digits():
  c, data, fam, state = tiny_family()
  step = parallel.train_step(fam.train_step, devices=jax.devices('cpu')[:1])
  ev = parallel.eval_step(fam.eval_step, devices=jax.devices('cpu')[:1])
  held = parallel.shard(next(data.eval_batches('validation', max_batches=1)), 1)
  rstate = parallel.replicate(state, 1)
  before = jax.device_get(ev(rstate, held, jax.random.PRNGKey(7)))
  losses = []
  for s in range(40):
    rstate, m = step(rstate, parallel.shard(data.train_batch(s), 1), jax.random.PRNGKey(s))
    losses.append(float(m['loss']))
  after = jax.device_get(ev(rstate, held, jax.random.PRNGKey(7)))
  # The training loss is the bound's one-draw estimate (noisy): compare means of 10 steps.
  assert np.isfinite(losses).all() and np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.1, losses
  nll_b, nll_a = before['nll'] / before['examples'], after['nll'] / after['examples']
  # Same held-out batch and eval key before and after: the bound must fall.
  assert np.isfinite(nll_a) and nll_a < nll_b, (nll_b, nll_a)  # nats per image


def test_dit_is_non_causal_and_outputs_levels():
  """The patch transformer sees every patch: changing the last patch changes the
  first one's output. With out_levels it returns per-level logits."""
  net = networks.DiT(patch=2, width=32, num_layers=1, num_heads=2, num_classes=10, out_levels=17)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
  t, label = jnp.array([3.0, 500.0]), jnp.array([1, 10])
  params = jax.jit(net.init)(jax.random.PRNGKey(1), z, t, label)['params']
  leaves, tree = jax.tree_util.tree_flatten(params)  # random weights (the head starts at zero)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  params = jax.tree_util.tree_unflatten(
      tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  apply = jax.jit(net.apply)
  out = apply({'params': params}, z, t, label)
  assert out.shape == (2, 8, 8, 1, 17)
  out2 = apply({'params': params}, z.at[:, 6:, 6:].add(1.0), t, label)
  assert np.abs(out2[:, :2, :2] - out[:, :2, :2]).max() > 1e-4
