"""Log-densities by the instantaneous change of variables.

Along the flow dx/dt = v(x, t), d log p_t(x(t)) / dt = -div v(x(t), t). So
from a data point x(t_data) = x the augmented ODE [x, delta] with d delta/dt =
div v, delta(t_data) = 0, integrated to the prior's time t_prior
(`solvers.solve`: RK4, or dopri5 to a tolerance), gives
    log p(x) = log N(x(t_prior); 0, I) + delta(t_prior).
Flow matching's data sit at t = 1 and its noise at t = 0; diffusion's
probability-flow ODE runs the other way.
The divergence is exact (the trace of `jax.jacfwd`, D forward passes per
example: for points) or Hutchinson's estimate eps^T (dv/dx) eps with K
Rademacher probes (one backward pass each). Each probe keeps its own delta
along the shared trajectory, so the K log-densities are independent unbiased
estimates; their mean is the estimate and their spread its standard error.
"""
import jax
import jax.numpy as jnp
import numpy as np

from genjax.errors import ConfigError
from genjax.ode import solvers

DIVERGENCES = ('exact', 'hutchinson')
LOG_2PI = float(np.log(2 * np.pi))


def std_normal_logpdf(x):
  """(B,) log N(x; 0, I) over all but the leading axis."""
  x = x.reshape(x.shape[0], -1)
  return -0.5 * (jnp.sum(x ** 2, -1) + x.shape[-1] * LOG_2PI)


def exact_divergence(velocity, x, t):
  """(B,) tr(dv/dx) per example, from the Jacobian of each example's field.
  `velocity(x_B, t) -> (B, ...)`; examples must not interact (no batch norm)."""
  def one(xi):
    flat = lambda z: velocity(z.reshape((1,) + xi.shape), t).reshape(-1)
    return jnp.trace(jax.jacfwd(flat)(xi.reshape(-1)))

  return jax.vmap(one)(x)


def rademacher(key, shape):
  return jax.random.rademacher(key, shape, jnp.float32)


def probes_for(divergence, keys_B, num, shape, salt):
  """(K, B, *shape) Rademacher probes for Hutchinson's estimator, drawn per
  example from its key folded with `salt`; None for the exact divergence."""
  if divergence != 'hutchinson':
    return None
  probes = jax.vmap(lambda k: rademacher(jax.random.fold_in(k, salt), (num,) + shape))(keys_B)
  return jnp.swapaxes(probes, 0, 1)


def hutchinson_divergence(velocity, x, t, probes_KxB):
  """(v (B, ...), (B, K) estimates eps_k^T (dv/dx) eps_k): one forward pass,
  then one vector-Jacobian product per probe."""
  v, vjp = jax.vjp(lambda z: velocity(z, t), x)
  jt_eps = jax.vmap(lambda e: vjp(e)[0])(probes_KxB)
  est = (probes_KxB * jt_eps).reshape(probes_KxB.shape[:2] + (-1,)).sum(-1)
  return v, est.T


def log_likelihood(velocity, x, *, steps, divergence, probes_KxB=None, t_data=1.0,
                   t_prior=0.0, solver='rk4', rtol=1e-5, atol=1e-5):
  """(log p(x) (B,), its standard error (B,), field evaluations) of data x
  under the flow of `velocity(x_B, t) -> (B, ...)` (t a scalar), solved from
  t_data to t_prior by `solvers.solve` (RK4 in `steps` steps by default, or
  dopri5 to rtol and atol). An evaluation is one of the velocity with its
  divergence. divergence 'exact' (standard error 0) or 'hutchinson' with the
  probes (K, B, ...) (K >= 2 for a standard error)."""
  B = x.shape[0]
  if divergence == 'exact':
    def field(state, t):
      x, _ = state
      return velocity(x, t), exact_divergence(velocity, x, t)
    delta = jnp.zeros((B,), jnp.float32)
  elif divergence == 'hutchinson':
    def field(state, t):
      x, _ = state
      return hutchinson_divergence(velocity, x, t, probes_KxB)
    delta = jnp.zeros((B, probes_KxB.shape[0]), jnp.float32)
  else:
    raise ConfigError(f'the divergence must be one of {DIVERGENCES}, got {divergence!r}')
  (x_prior, delta), _, evals = solvers.solve(field, (x.astype(jnp.float32), delta), solver=solver,
                                             steps=steps, t0=t_data, t1=t_prior, rtol=rtol,
                                             atol=atol)
  log_p = std_normal_logpdf(x_prior)
  if divergence == 'exact':
    return log_p + delta, jnp.zeros_like(log_p), evals
  K = delta.shape[1]
  se = jnp.std(delta, axis=1, ddof=1) / np.sqrt(K) if K > 1 else jnp.zeros_like(log_p)
  return log_p + delta.mean(1), se, evals
