"""Probability paths from noise (t = 0) to data (t = 1) and the conditional
flow-matching loss, as pure functions.

A path is x_t = alpha_t x1 + sigma_t x0 with x0 ~ N(0, I) (noise) and x1 the
data; the conditional velocity is u_t = alpha'_t x1 + sigma'_t x0.
  'straight'  alpha_t = t, sigma_t = 1 - t: rectified flow / the optimal-
              transport path of Lipman et al.; u_t = x1 - x0.
  'vp'        alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2): variance
              preserving (alpha^2 + sigma^2 = 1), a cosine schedule.
The network v(x_t, t) regresses u_t (`cfm_loss`); the minimiser is
E[u_t | x_t], whose flow carries N(0, I) to the data distribution.
"""
import jax
import jax.numpy as jnp
import numpy as np

from genjax.errors import ConfigError

PATHS = ('straight', 'vp')


def coefficients(path, t):
  """(alpha_t, sigma_t, d alpha / dt, d sigma / dt), each shaped like t."""
  t = jnp.asarray(t, jnp.float32)
  if path == 'straight':
    return t, 1.0 - t, jnp.ones_like(t), -jnp.ones_like(t)
  if path == 'vp':
    a = 0.5 * np.pi
    return jnp.sin(a * t), jnp.cos(a * t), a * jnp.cos(a * t), -a * jnp.sin(a * t)
  raise ConfigError(f"flow_matching.path must be one of {PATHS}, got {path!r}")


def _bcast(v_B, x):
  return v_B.reshape(v_B.shape + (1,) * (x.ndim - v_B.ndim))


def interpolate(path, x0, x1, t_B):
  """(x_t, u_t): the point on the path between noise x0 and data x1 at times
  t_B (B,), and the conditional velocity there; both shaped like x1."""
  alpha, sigma, d_alpha, d_sigma = (_bcast(c, x1) for c in coefficients(path, t_B))
  return alpha * x1 + sigma * x0, d_alpha * x1 + d_sigma * x0


def cfm_loss(velocity, path, x1, t_B, x0):
  """Conditional flow matching: the mean over the batch of ||v(x_t, t) - u_t||^2
  per dimension, a scalar. `velocity(x_t, t_B) -> (B, ...)`."""
  x_t, u_t = interpolate(path, x0, x1, t_B)
  err = jnp.square(velocity(x_t, t_B).astype(jnp.float32) - u_t)
  return err.reshape(x1.shape[0], -1).mean(-1).mean()


def draw(keys, shape):
  """(t_B, x0): a time uniform on [0, 1) and a standard normal per example,
  example i's from keys[i], so draws do not depend on the device split."""
  t = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 0)))(keys)
  x0 = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), shape))(keys)
  return t, x0


def posterior_mean(path, x, v, t):
  """E[x1 | x_t = x] from the field's value v = E[u_t | x_t = x] there: x_t and
  u_t are the same mix of x1 and x0, so (sigma v - sigma' x) / (alpha' sigma -
  sigma' alpha); on the straight path, x + (1 - t) v."""
  _, sigma, _, d_sigma = coefficients(path, t)
  return (sigma * v - d_sigma * x) / _velocity_scale(path, t)


def inpainting_field(field, path, y, known, t_min=1e-3):
  """The field conditioned on the coordinates where `known` holds equalling y's
  there (inpainting): v plus w_t times grad_x log p(y_known | x_t), Tweedie's
  shift of E[x1 | x_t] written as a velocity. p(y_known | x_t) is taken as a
  Gaussian around the known part of `posterior_mean`, with the variance
  sigma^2 / (alpha^2 + sigma^2) that unit-variance data would have (PiGDM,
  Song et al. 2023; Pokle et al. 2023 for flows): one vector-Jacobian product
  of the field per evaluation, exact only where that variance is the
  posterior's. w_t = (alpha' sigma - sigma' alpha) (alpha^2 + sigma^2) /
  (alpha sigma) grows without bound at both ends of the path, so t is held
  within [t_min, 1 - t_min] in it. `field(x, t) -> v` as the solvers take it;
  so is the result."""
  def conditioned(x, t):
    v, vjp = jax.vjp(lambda x: field(x, t), x)
    _, sigma, _, d_sigma = coefficients(path, t)
    scale = _velocity_scale(path, t)
    residual = jnp.where(known, y - posterior_mean(path, x, v, t), 0.0)
    grad = (sigma * vjp(residual)[0] - d_sigma * residual) / scale  # J(x1_hat)^T residual
    alpha_c, sigma_c, _, _ = coefficients(path, jnp.clip(t, t_min, 1.0 - t_min))
    weight = scale * (alpha_c ** 2 + sigma_c ** 2) / (alpha_c * sigma_c)
    return v + weight * grad

  return conditioned


def _velocity_scale(path, t):
  """alpha' sigma - sigma' alpha: 1 on the straight path, pi / 2 on 'vp'."""
  alpha, sigma, d_alpha, d_sigma = coefficients(path, t)
  return d_alpha * sigma - d_sigma * alpha
