"""ODE solvers for dy/dt = f(y, t): fixed steps, each one `lax.scan` over
steps, and Dormand-Prince's adaptive one (diffrax).

`y` may be any pytree (the likelihood integrates [x, log-det] together).
Every solver returns (y at t1, the trajectory or None, network evaluations):
each call of f is one evaluation of the network.
  euler   one evaluation per step: steps.
  heun    Heun's method (explicit trapezoid): an Euler predictor, then the
          mean of the slopes at both ends; the last step is Euler's alone,
          as in EDM, so the field is never evaluated at t1 itself (at the
          data end it is the network's guess where the data are points):
          2 * steps - 1.
  rk4     classical Runge-Kutta: 4 * steps.
  dopri5  Dormand-Prince 5(4), its step sizes set by the error estimate
          against rtol and atol: 1 + 6 per step tried, a traced count
          (`dopri5`).
"""
import jax
import jax.numpy as jnp

from genjax.errors import ConfigError

SOLVERS = ('euler', 'heun', 'rk4', 'dopri5')
STAGES = {'euler': 1, 'heun': 2, 'rk4': 4}
# Dopri5's seven stages less the first, which is the step before's last (FSAL).
DOPRI5_NEW_STAGES = 6
MAX_STEPS = 4096  # dopri5's steps, accepted or rejected, before it stops with an error


def network_evals(solver, steps):
  """Evaluations of f that `solve` spends for one solve (per sample); None for
  dopri5, whose count is known only once it has run."""
  if solver not in SOLVERS:
    raise ConfigError(f'sample.solver must be one of {SOLVERS}, got {solver!r}')
  if solver == 'dopri5':
    return None
  return STAGES[solver] * steps - (solver == 'heun')


def _axpy(a, x, y):
  """y + a * x over pytrees."""
  return jax.tree_util.tree_map(lambda xi, yi: yi + a * xi, x, y)


def euler_step(f, y, t, h):
  return _axpy(h, f(y, t), y)


def heun_step(f, y, t, h):
  k1 = f(y, t)
  k2 = f(_axpy(h, k1, y), t + h)
  return jax.tree_util.tree_map(lambda yi, a, b: yi + 0.5 * h * (a + b), y, k1, k2)


# Classical RK4's Butcher tableau: stage nodes c, stage weights a (row i uses
# the slopes before it), and the final weights b.
RK4_C = (0.0, 0.5, 0.5, 1.0)
RK4_A = ((0.0, 0.0, 0.0, 0.0), (0.5, 0.0, 0.0, 0.0), (0.0, 0.5, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0))
RK4_B = (1 / 6, 1 / 3, 1 / 3, 1 / 6)


def rk4_step(f, y, t, h):
  """The four stages run as a loop over the tableau, so f is traced (and
  compiled) once per step, not four times."""
  a, c = jnp.asarray(RK4_A, jnp.float32), jnp.asarray(RK4_C, jnp.float32)
  k0 = jax.eval_shape(lambda: f(y, t))
  ks = jax.tree_util.tree_map(lambda s: jnp.zeros((4,) + s.shape, s.dtype), k0)

  def stage(ks, i):
    y_i = jax.tree_util.tree_map(
        lambda yi, k: yi + h * jnp.tensordot(a[i], k, axes=1).astype(yi.dtype), y, ks)
    k_i = f(y_i, t + c[i] * h)
    return jax.tree_util.tree_map(lambda k, ki: k.at[i].set(ki), ks, k_i), None

  ks, _ = jax.lax.scan(stage, ks, jnp.arange(4))
  b = jnp.asarray(RK4_B, jnp.float32)
  return jax.tree_util.tree_map(
      lambda yi, k: yi + h * jnp.tensordot(b, k, axes=1).astype(yi.dtype), y, ks)


STEPS = {'euler': euler_step, 'heun': heun_step, 'rk4': rk4_step}


def dopri5(f, y, *, t0, t1, steps, rtol, atol, keep_path=False):
  """Dormand-Prince 5(4) with diffrax's PID step-size controller, from a first
  step of (t1 - t0) / steps; with keep_path the trajectory is its dense output
  at the steps + 1 equally spaced times. Returns as `solve` does, the
  evaluations an int32 array from diffrax's stats: f once at t0, then 6 per
  step tried, accepted or rejected (num_steps), as a step's seventh stage, at
  its end, is the next step's first. f at t0 is computed here and handed to
  diffrax as that stage, so that a rejected first step does not evaluate it
  again. The error norm is the RMS over all of y: a batch shares its steps."""
  import diffrax  # pylint: disable=g-import-not-at-top  # its import is slow; only dopri5 needs it
  term = diffrax.ODETerm(lambda t, y, args: f(y, t))
  saveat = (diffrax.SaveAt(ts=jnp.linspace(t0, t1, steps + 1)) if keep_path else
            diffrax.SaveAt(t1=True))
  first = (jnp.array(False), f(y, t0))  # Dopri5's state: (first step?, f at t0)
  sol = diffrax.diffeqsolve(term, diffrax.Dopri5(), t0, t1, (t1 - t0) / steps, y, saveat=saveat,
                            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                            max_steps=MAX_STEPS, solver_state=first)
  y_end = jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
  evals = 1 + DOPRI5_NEW_STAGES * sol.stats['num_steps']
  return y_end, (sol.ys if keep_path else None), evals


def solve(f, y, *, solver, steps, t0=0.0, t1=1.0, keep_path=False, rtol=1e-5, atol=1e-5):
  """Integrates f from t0 to t1 (t1 < t0 runs backwards) in `steps` equal
  steps, or for dopri5 adaptively to rtol and atol (`dopri5`).

  Returns (y(t1), trajectory, network evaluations): the trajectory is the
  states at the steps+1 times (leading axis), with keep_path, else None; the
  evaluations a Python int, for dopri5 an int32 array.
  """
  if solver == 'dopri5':
    return dopri5(f, y, t0=t0, t1=t1, steps=steps, rtol=rtol, atol=atol, keep_path=keep_path)
  evals = network_evals(solver, steps)
  one_step, h = STEPS[solver], (t1 - t0) / steps
  loop_steps = steps - 1 if solver == 'heun' else steps

  def body(y, i):
    y = one_step(f, y, t0 + i * h, h)
    return y, (y if keep_path else None)

  y_end, path = jax.lax.scan(body, y, jnp.arange(loop_steps, dtype=jnp.float32))
  parts = [jax.tree_util.tree_map(lambda a: a[None], y), path]
  if solver == 'heun':
    y_end = euler_step(f, y_end, t0 + loop_steps * h, h)
    parts.append(jax.tree_util.tree_map(lambda a: a[None], y_end))
  if keep_path:
    path = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *parts)
  return y_end, path, evals
