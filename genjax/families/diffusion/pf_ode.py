"""The diffusion's probability-flow ODE and the likelihood it gives.

Time: the chain's step t = 1..T sits at s = t / T, and between steps the
log-SNR lambda = log(alpha_bar / (1 - alpha_bar)) is linear in s (as VDM's
proposal treats it, `schedules.log_snr_proposal`); so alpha_bar(s) =
sigmoid(lambda(s)) is the table's at every step. The variance-preserving SDE
with these marginals has f(s) = (d log alpha_bar / ds) / 2 and g(s)^2 =
-d log alpha_bar / ds, and with score -eps_hat / sigma its probability-flow
ODE is
    dx/ds = f x - g^2 / 2 score = (d log alpha_bar / ds) / 2 (x - eps_hat / sigma).
As d log alpha_bar = sigma^2 d lambda, in lambda it reads
    dx/dlambda = sigma (sigma x - eps_hat) / 2,  sigma^2 = sigmoid(-lambda),
and the solvers step in lambda: there the field is smooth, where in s the
cosine schedule's rate diverges at s = 1 and the steps' kinks cost RK4 its
order. The network sees the float step s T.

The likelihood integrates the ODE with its divergence (`genjax.ode.likelihood`)
from the data at step 1 (s = 1 / T: at s = 0 sigma is 0 and the score is not
defined) to step T (s = 1) and adds log N(x(1); 0, I): the density of N(0, I)
carried back through the ODE, the data read as step 1's x_1. It differs from
the data's density by the prior's mismatch at step T and the noise at step 1.
"""
import jax
import jax.numpy as jnp
import numpy as np

from genjax.families.diffusion import losses
from genjax.ode import likelihood


def step_at(sched, lam):
  """The float step (1..T) at log-SNR lam: the table's steps 1..T, linear in
  between."""
  T = sched.num_steps
  # jnp.interp wants increasing points: -lambda grows with t.
  return jnp.interp(-lam, -sched.log_snr[1:], jnp.arange(1, T + 1, dtype=jnp.float32))


def velocity(eps_fn, sched):
  """The ODE's field `(x_B, lam) -> dx/dlambda` (lam a scalar) of the noise
  prediction `eps_fn(z_B, step, alpha, sigma) -> eps_hat` (scalar step,
  alpha, sigma)."""
  def field(x, lam):
    alpha, sigma = jnp.sqrt(jax.nn.sigmoid(lam)), jnp.sqrt(jax.nn.sigmoid(-lam))
    eps = eps_fn(x, step_at(sched, lam), alpha, sigma)
    return 0.5 * sigma * (sigma * x - eps)

  return field


def model_eps(net, target, params, label_N):
  """`eps_fn` of the network, whatever it predicts (eps, x0, v or lattice
  logits, read as in `losses.predict`)."""
  def eps_fn(z, step, alpha, sigma):
    full = lambda a: jnp.full((z.shape[0],), a, jnp.float32)
    _, eps = losses.predict_at(net, target, params, z, full(step), full(alpha), full(sigma),
                               label_N)
    return eps.astype(jnp.float32)

  return eps_fn


def log_likelihood(eps_fn, sched, x, *, steps, divergence, probes_KxB=None, solver='rk4',
                   rtol=1e-5, atol=1e-5):
  """(log p(x) (B,), its standard error (B,), field evaluations) of x in model
  space under the probability-flow ODE of `eps_fn` (see `velocity`), from
  step 1 to step T: RK4 in `steps` steps equal in log-SNR, or dopri5 to rtol
  and atol; divergence and probes as in `genjax.ode.likelihood`."""
  log_snr = np.asarray(sched.log_snr)
  return likelihood.log_likelihood(velocity(eps_fn, sched), x, steps=steps,
                                   divergence=divergence, probes_KxB=probes_KxB,
                                   t_data=float(log_snr[1]), t_prior=float(log_snr[-1]),
                                   solver=solver, rtol=rtol, atol=atol)
