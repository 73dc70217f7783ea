"""Diffusion's probability-flow ODE: its likelihood against a Gaussian's closed
form, its time map, the network's prediction read as noise, and the eval metric."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import config_check, parallel
from genjax.data import Dataset
from genjax.errors import ConfigError
from genjax.experiments import diffusion as diffusion_config
from genjax.families import diffusion
from genjax.families.diffusion import losses, pf_ode, schedules

MU = jnp.array([1.5, -0.5])
STD = jnp.array([0.5, 1.3])


def gaussian_eps(mu, std):
  """The exact noise prediction E[eps | x_t = z] for data N(mu, diag(std^2)):
  x_t ~ N(alpha mu, v), v = alpha^2 std^2 + sigma^2, so the score is
  -(z - alpha mu) / v and eps_hat = -sigma score."""
  def eps_fn(z, step, alpha, sigma):
    del step
    return sigma * (z - alpha * mu) / (alpha ** 2 * std ** 2 + sigma ** 2)

  return eps_fn


def gaussian_logpdf(x, mu, std):
  return jnp.sum(-0.5 * ((x - mu) / std) ** 2 - jnp.log(std) - 0.5 * np.log(2 * np.pi), -1)


def grid(r, n=9):
  """n points of N(MU, STD^2) from -r to r standard deviations (the two axes opposed)."""
  c = jnp.linspace(-r, r, n)
  return MU + STD * jnp.stack([c, c[::-1]], 1)


def ode_log_p(sched, x, steps, **solver):
  return jax.jit(lambda x: pf_ode.log_likelihood(gaussian_eps(MU, STD), sched, x, steps=steps,
                                                 divergence='exact', **solver))(x)


@pytest.mark.parametrize('solver', [dict(solver='rk4'),
                                    dict(solver='dopri5', rtol=1e-6, atol=1e-6)],
                         ids=['rk4', 'dopri5'])
def test_the_exact_score_gives_the_gaussian_density(solver):
  """Cosine schedule, T = 1000, exact divergence, RK4 in 64 steps equal in
  log-SNR from step 1 to T, or dopri5 at rtol = atol = 1e-6: -log p(x) is the
  data's analytic density within 1e-3 nats out to 2 standard deviations. What
  separates them is the noise at step 1 and the prior's mismatch at T (below
  5e-4 nats here)."""
  x = grid(2.0)
  log_p, se, evals = ode_log_p(schedules.Schedule.make('cosine', 1000), x, 64, **solver)
  np.testing.assert_allclose(log_p, gaussian_logpdf(x, MU, STD), atol=1e-3)
  assert np.all(se == 0) and (solver['solver'] == 'dopri5' or evals == 4 * 64)
  # A wrong data law is told apart.
  assert np.max(np.abs(log_p - gaussian_logpdf(x, MU, 1.1 * STD))) > 1e-2


@pytest.mark.parametrize('name,T', [('linear', 1000), ('cosine', 1000), ('linear', 20)])
def test_the_likelihood_is_the_prior_carried_back_exactly(name, T):
  """For Gaussian data the flow is affine: x(T) = alpha_T mu + sqrt(v_T / v_1)
  (x - alpha_1 mu), so log p(x) = log N(x(T); 0, I) + log sqrt(v_T / v_1) per
  axis whatever the schedule, prior mismatch included (linear's is 0.05 nats):
  RK4 in 64 steps gives it within 1e-4, out to 3 standard deviations."""
  sched = schedules.Schedule.make(name, T)
  ab = np.asarray(sched.alpha_bar, np.float64)
  v = lambda a2: a2 * np.asarray(STD) ** 2 + 1 - a2
  x = grid(3.0)
  x_T = (np.sqrt(ab[T]) * np.asarray(MU)
         + np.sqrt(v(ab[T]) / v(ab[1])) * (np.asarray(x) - np.sqrt(ab[1]) * np.asarray(MU)))
  want = (-0.5 * (x_T ** 2).sum(-1) - np.log(2 * np.pi)
          + 0.5 * np.log(v(ab[T]) / v(ab[1])).sum())
  log_p, _, _ = ode_log_p(sched, x, 64)
  np.testing.assert_allclose(log_p, want, atol=1e-4)


def test_log_snr_clock_lands_on_the_steps():
  """The float step at each step's log-SNR is that step, and it grows in between."""
  sched = schedules.Schedule.make('cosine', 50)
  lam = np.asarray(sched.log_snr[1:])
  np.testing.assert_allclose(pf_ode.step_at(sched, lam), np.arange(1, 51), atol=1e-3)
  mid = pf_ode.step_at(sched, 0.5 * (lam[:-1] + lam[1:]))
  assert np.all((mid > np.arange(1, 50)) & (mid < np.arange(2, 51)))


class StubNet:
  """A network whose output is a fixed function of (z, step): per-level logits
  (lattice, 5 levels) or an array shaped like z."""
  num_classes = 0

  def __init__(self, target):
    self.target = target

  def apply(self, variables, z, t, label, train=False, rngs=None):
    del variables, label, train, rngs
    h = jnp.sin(3 * z + t.reshape((-1,) + (1,) * (z.ndim - 1)) / 7)
    return jnp.stack([k * h for k in range(5)], -1) if self.target == 'lattice' else h


@pytest.mark.parametrize('target', ['eps', 'x0', 'v', 'lattice'])
def test_model_eps_is_the_noise_that_predict_reads(target):
  """At a step of the chain, the ODE's noise prediction is `losses.predict`'s,
  whatever the network predicts."""
  sched = schedules.Schedule.make('linear', 40)
  net, t = StubNet(target), 17
  z = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2, 1))
  alpha, sigma = sched.alpha_sigma(t)
  eps = pf_ode.model_eps(net, target, None, None)(z, jnp.float32(t), alpha, sigma)
  _, want = losses.predict(net, sched, target, None, z, jnp.full((3,), t), None)
  np.testing.assert_allclose(eps, want, rtol=1e-5, atol=1e-6)


def ode_eval(**overrides):
  """Eval sums of the ring8 smoke model at init (2 RK4 steps)."""
  c = diffusion_config.get_config('ring8,smoke')
  for key, value in overrides.items():
    c.diffusion[key] = value
  data = Dataset(c.data, seed=0)
  fam = diffusion.build(c, data.info)
  state = fam.init(jax.random.PRNGKey(0), data.train_batch(0))
  ev = parallel.eval_step(fam.eval_step, devices=jax.devices('cpu')[:1])
  batch = parallel.shard(next(data.eval_batches(max_batches=1)), 1)
  return jax.device_get(ev(parallel.replicate(state, 1), batch, jax.random.PRNGKey(3)))


def test_eval_reports_the_ode_likelihood_only_when_asked():
  """'nll_ode' is finite beside the bound, absent by default (where the bound's
  sums are the same); 'ode_evals' sums the field evaluations per example. At init the MLP's head is zero, so the field is a
  multiple of x and Hutchinson's estimate (2 probes) is the exact divergence."""
  off = ode_eval()
  exact = ode_eval(ode_likelihood=True, ode_divergence='exact')
  hutch = ode_eval(ode_likelihood=True, ode_divergence='hutchinson')
  assert 'nll_ode' not in off and np.isfinite(exact['nll_ode']).all()
  for key in off:
    np.testing.assert_array_equal(exact[key], off[key])
  np.testing.assert_allclose(hutch['nll_ode'], exact['nll_ode'], rtol=1e-5)
  assert (exact['nll_ode_se'] == 0).all() and (hutch['nll_ode_se'] == 0).all()
  np.testing.assert_array_equal(exact['ode_evals'], 4 * 2 * exact['examples'])  # RK4, 2 steps


def test_images_are_dequantised_across_their_bins():
  """Each value moves by less than half a level, with the bin's log-Jacobian
  (L = 17 levels on [-1, 1]); points are only rescaled."""
  info = types.SimpleNamespace(modality='image', num_levels=17)
  x0 = jnp.linspace(-1, 1, 17)[jax.random.randint(jax.random.PRNGKey(0), (4, 3, 3, 1), 0, 17)]
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  y, log_jac = diffusion.dequantise(x0, keys, info, 1.0)
  shift = (y - x0) * 8  # in levels
  assert np.all((shift >= -0.5) & (shift < 0.5)) and np.std(shift) > 0.2
  np.testing.assert_allclose(log_jac, 9 * np.log(2 / 16), rtol=1e-6)
  info = types.SimpleNamespace(modality='points', num_levels=0)
  y, log_jac = diffusion.dequantise(x0[:, 0, 0], keys, info, 2.0)
  np.testing.assert_array_equal(y, x0[:, 0, 0])
  np.testing.assert_allclose(log_jac, -np.log(2.0))


def test_bad_ode_settings_are_named():
  for field, value in (('ode_solver', 'midpoint'), ('ode_divergence', 'skilling'),
                       ('ode_rtol', -1.0)):
    c = diffusion_config.get_config('ring8,smoke')
    c.diffusion[field] = value
    with pytest.raises(ConfigError, match=f"diffusion.{field}={value!r}"):
      config_check.check(c)
