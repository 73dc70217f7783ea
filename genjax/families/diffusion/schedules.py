"""The forward process: beta schedules, q(x_t | x_0), the posterior
q(x_{t-1} | x_t, x_0), and the terms of the variational bound.

Steps are t = 1..T; index 0 of every table is the data (alpha_bar = 1).
Everything is float32 jnp arrays so the tables close over jitted code.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from genjax.errors import ConfigError


def betas(name, num_steps):
  """(T,) float64 betas. 'linear' is DDPM's 1e-4..0.02 (rescaled to T as in
  improved DDPM, so T=1000 is the paper's), 'cosine' is improved DDPM's."""
  if name == 'linear':
    scale = 1000.0 / num_steps
    return np.clip(np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64), 0, 0.999)
  if name == 'cosine':
    s = 0.008
    f = lambda t: np.cos((t / num_steps + s) / (1 + s) * np.pi / 2) ** 2
    t = np.arange(num_steps + 1, dtype=np.float64)
    alpha_bar = f(t) / f(0)
    return np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0.0, 0.999)
  raise ConfigError(f"diffusion.schedule must be 'linear' or 'cosine', got {name!r}")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Tables over t = 0..T (index 0 = clean data)."""
  beta: jnp.ndarray       # (T+1,), beta[0] = 0
  alpha_bar: jnp.ndarray  # (T+1,)
  log_snr: jnp.ndarray    # (T+1,), log alpha_bar / (1 - alpha_bar); +inf at 0

  @property
  def num_steps(self):
    return self.beta.shape[0] - 1

  @classmethod
  def make(cls, name, num_steps):
    b = np.concatenate([[0.0], betas(name, num_steps)])
    ab = np.cumprod(1.0 - b)
    with np.errstate(divide='ignore'):
      log_snr = np.log(ab) - np.log1p(-ab)
    f = lambda a: jnp.asarray(a, jnp.float32)
    return cls(f(b), f(ab), f(log_snr))

  def alpha_sigma(self, t):
    ab = self.alpha_bar[t]
    return jnp.sqrt(ab), jnp.sqrt(1.0 - ab)

  def snr(self, t):
    return jnp.exp(self.log_snr[t])


def _bcast(a_B, x):
  return a_B.reshape(a_B.shape + (1,) * (x.ndim - a_B.ndim))


def q_sample(sched, x0, t_B, eps):
  """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
  alpha, sigma = sched.alpha_sigma(t_B)
  return _bcast(alpha, x0) * x0 + _bcast(sigma, x0) * eps


def posterior(sched, x0, xt, t_B):
  """Mean and variance of q(x_{t-1} | x_t, x_0), t >= 1 (variance 0 at t = 1)."""
  ab_t, ab_s = sched.alpha_bar[t_B], sched.alpha_bar[t_B - 1]
  beta = sched.beta[t_B]
  c0 = jnp.sqrt(ab_s) * beta / (1.0 - ab_t)
  ct = jnp.sqrt(1.0 - beta) * (1.0 - ab_s) / (1.0 - ab_t)
  var = beta * (1.0 - ab_s) / (1.0 - ab_t)
  return _bcast(c0, x0) * x0 + _bcast(ct, xt) * xt, var


def predictions(target, out, z, alpha, sigma):
  """(x0_hat, eps_hat) from the network output for target eps, x0 or v
  (the lattice head gives x0 directly). alpha, sigma broadcast against z."""
  if target == 'eps':
    return (z - sigma * out) / alpha, out
  if target in ('x0', 'lattice'):
    return out, (z - alpha * out) / sigma
  if target == 'v':  # v = alpha eps - sigma x0
    return alpha * z - sigma * out, sigma * z + alpha * out
  raise ConfigError(f"diffusion.target must be 'eps', 'x0', 'v' or 'lattice', got {target!r}")


# ----------------------------------------------------------------------------- the bound

def prior_kl(sched, x0):
  """KL(q(x_T | x_0) || N(0, I)), summed over all but the batch axis."""
  alpha, sigma = sched.alpha_sigma(sched.num_steps)
  mean2, var = (alpha * x0) ** 2, sigma ** 2
  kl = 0.5 * (var + mean2 - 1.0 - jnp.log(var))
  return kl.reshape(x0.shape[0], -1).sum(-1)


def discretized_gaussian_nll(x0, mean, std, num_levels):
  """-log P(x_0) of levels at -1 + 2k/(L-1) under N(mean, std^2) integrated
  over each level's bin (the two end bins reach to -inf / +inf). Summed per
  example. Tail probabilities are computed on the far side for accuracy."""
  half = 1.0 / (num_levels - 1)
  upper = (x0 + half - mean) / std
  lower = (x0 - half - mean) / std
  mid = jnp.where(lower > 0, ndtr(-lower) - ndtr(-upper), ndtr(upper) - ndtr(lower))
  p = jnp.where(x0 < -1 + half, ndtr(upper), jnp.where(x0 > 1 - half, ndtr(-lower), mid))
  nll = -jnp.log(jnp.maximum(p, 1e-30))
  return nll.reshape(x0.shape[0], -1).sum(-1)


def gaussian_nll(x0, mean, std):
  """-log N(x_0; mean, std^2) for continuous data, summed per example."""
  nll = 0.5 * ((x0 - mean) / std) ** 2 + jnp.log(std) + 0.5 * jnp.log(2 * jnp.pi)
  return nll.reshape(x0.shape[0], -1).sum(-1)


def log_snr_proposal(sched):
  """(T+1,) probabilities of t = 2..T proportional to the fall in log-SNR over
  the step (0 at t = 0, 1). Sampling t from it makes the bound's weight per
  step equal 0.5 * (SNR_{t-1}/SNR_t - 1) / p_t ~ constant: VDM's low-variance
  estimator of the diffusion term, as if gamma were linear in time."""
  d = sched.log_snr[1:-1] - sched.log_snr[2:]  # t = 2..T
  p = d / d.sum()
  return jnp.concatenate([jnp.zeros(2), p])


def sample_t(probs, u_B):
  """Inverse-CDF draw of t from `probs` (T+1,) at uniforms u_B."""
  cdf = jnp.cumsum(probs)
  return jnp.clip(jnp.searchsorted(cdf, u_B * cdf[-1], side='right'), 0, probs.shape[0] - 1)


def diffusion_term_weight(sched, t_B):
  """KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) = w_t ||eps - eps_hat||^2 when p
  has the posterior's variance; w_t = 0.5 (SNR_{t-1}/SNR_t - 1), t >= 2."""
  return 0.5 * jnp.expm1(sched.log_snr[t_B - 1] - sched.log_snr[t_B])


def stratified_uniform(rng, index_B, total):
  """One uniform per example, stratified over `total` examples: example i
  gets (u + i/total) mod 1, with u shared, so any split of the batch over
  devices draws the same values."""
  u = jax.random.uniform(rng, ())
  return jnp.mod(u + index_B.astype(jnp.float32) / total, 1.0)
