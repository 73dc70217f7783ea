"""Reverse-process samplers, each one `lax.scan` over steps: DDPM ancestral,
DDIM (any number of steps, any eta), inpainting and denoising, with
classifier-free guidance.

A sampler takes `predict(z, t_B) -> (x0_hat, eps_hat)` (the network with its
labels and guidance bound in) and works in model space ([-1, 1] for images).
"""
import jax
import jax.numpy as jnp
import numpy as np

from genjax.families.diffusion import schedules


def guided(apply, params, label_N, scale, num_classes, null_label):
  """`predict` for classifier-free guidance: eps = eps_u + scale (eps_c - eps_u),
  so scale 0 is the unconditional model and 1 the conditional one. Returns
  (predict, network passes per step)."""
  if not num_classes or label_N is None:
    return (lambda z, t: apply(params, z, t, None)), 1
  null_N = jnp.full_like(label_N, null_label)
  if scale == 0:
    return (lambda z, t: apply(params, z, t, null_N)), 1
  if scale == 1:
    return (lambda z, t: apply(params, z, t, label_N)), 1

  def predict(z, t_N):
    x0, eps = apply(params, jnp.concatenate([z, z]), jnp.concatenate([t_N, t_N]),
                    jnp.concatenate([label_N, null_N]))
    eps_c, eps_u = jnp.split(eps, 2)
    x0_c, x0_u = jnp.split(x0, 2)
    # Mixing x0 with the same weights is the same as mixing eps (x0 is affine in eps).
    return x0_u + scale * (x0_c - x0_u), eps_u + scale * (eps_c - eps_u)

  return predict, 2


def _clip(sched, z, t_N, x0, eps, clip):
  if not clip:
    return x0, eps
  alpha, sigma = sched.alpha_sigma(t_N)
  alpha, sigma = schedules._bcast(alpha, z), schedules._bcast(sigma, z)  # pylint: disable=protected-access
  x0 = jnp.clip(x0, -1.0, 1.0)
  return x0, (z - alpha * x0) / sigma


def _reimpose(sched, z, s, known, rng):
  """Replaces the known pixels of z_s by a fresh draw of q(x_s | x_0)."""
  if known is None:
    return z
  mask, x0 = known
  s_N = jnp.full(z.shape[:1], s)
  z_known = schedules.q_sample(sched, x0, s_N, jax.random.normal(rng, z.shape))
  return jnp.where(mask, z_known, z)


def ddpm(predict, sched, z_T, rng, variance='small', clip=True, known=None, path=False):
  """Ancestral sampling over all T steps. `variance`: 'small' (the posterior's
  tilde beta_t) or 'large' (beta_t). `known` = (mask, x0): inpainting. Returns
  x_0, and with `path` also x_t for t = T-1..0 (T, N, ...)."""
  T = sched.num_steps
  step = ddpm_step(predict, sched, variance, clip, known, path)
  ts = jnp.arange(T, 0, -1)
  z0, zs = jax.lax.scan(step, z_T, (ts, jax.random.split(rng, T)))
  return (z0, zs) if path else z0


def ddpm_step(predict, sched, variance='small', clip=True, known=None, path=False):
  """The body of `ddpm`'s scan: (z_t, (t, key)) -> (z_{t-1}, z_{t-1} if path)."""

  def step(z, xs):
    t, key = xs
    k_noise, k_known = jax.random.split(key)
    t_N = jnp.full(z.shape[:1], t)
    x0, eps = _clip(sched, z, t_N, *predict(z, t_N), clip)
    mean, var = schedules.posterior(sched, x0, z, t_N)
    var = var[0] if variance == 'small' else jnp.where(t > 1, sched.beta[t], 0.0)
    z = mean + jnp.sqrt(var) * jax.random.normal(k_noise, z.shape)
    z = _reimpose(sched, z, t - 1, known, k_known)
    return z, (z if path else None)

  return step


def ddim_timesteps(T, num_steps, start=None):
  """Descending int steps from `start` (default T) to 0, `num_steps` + 1 of them."""
  start = T if start is None else start
  frac = jnp.arange(num_steps, -1, -1, dtype=jnp.float32) / num_steps
  return jnp.round(frac * start).astype(jnp.int32)


def ddim(predict, sched, z, rng, timesteps, eta=0.0, clip=True, known=None, path=False):
  """DDIM from timesteps[0] down to timesteps[-1] (= 0). eta = 0 is
  deterministic given z; eta = 1 over all steps is DDPM with tilde beta."""

  def step(z, xs):
    t, s, key = xs
    k_noise, k_known = jax.random.split(key)
    t_N = jnp.full(z.shape[:1], t)
    x0, eps = _clip(sched, z, t_N, *predict(z, t_N), clip)
    ab_t, ab_s = sched.alpha_bar[t], sched.alpha_bar[s]
    sig = eta * jnp.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
    dir_coef = jnp.sqrt(jnp.maximum(1 - ab_s - sig ** 2, 0.0))
    z_new = jnp.sqrt(ab_s) * x0 + dir_coef * eps + sig * jax.random.normal(k_noise, z.shape)
    z_new = jnp.where(t > s, z_new, z)  # a repeated step (start < num_steps) is a no-op
    z_new = _reimpose(sched, z_new, s, known, k_known)
    return z_new, (z_new if path else None)

  n = timesteps.shape[0] - 1
  z0, zs = jax.lax.scan(step, z, (timesteps[:-1], timesteps[1:], jax.random.split(rng, n)))
  return (z0, zs) if path else z0


def noise_level_step(sched, sigma):
  """The step whose noise-to-signal ratio sigma_t / alpha_t is closest to `sigma`:
  an image y = x + sigma n is then x_t / alpha_t at that step."""
  target = -2.0 * jnp.log(sigma)
  return 1 + jnp.argmin(jnp.abs(sched.log_snr[1:] - target))


def denoise(predict, sched, y, sigma, rng, num_steps=20, clip=True):
  """Denoises y = x + sigma * n (model space): starts DDIM (eta = 0) at the
  matching step from z_t = alpha_t y. Returns (one-shot x0_hat, DDIM result)."""
  t = noise_level_step(sched, sigma)
  alpha, _ = sched.alpha_sigma(t)
  z = alpha * y
  t_N = jnp.full(y.shape[:1], t)
  x0_once, _ = _clip(sched, z, t_N, *predict(z, t_N), clip)
  out = ddim(predict, sched, z, rng, ddim_timesteps(sched.num_steps, num_steps, t), 0.0, clip)
  return x0_once, out


def num_function_evals(sampler, sched, ddim_steps, passes):
  """Network evaluations per sample."""
  steps = sched.num_steps if sampler == 'ddpm' else ddim_steps
  return int(steps) * passes


def strip_indices(T, frames):
  """Which x_t of a DDPM path (index i holds x_{T-1-i}) to show: frames from T-1 to 0."""
  return np.round(np.linspace(0, T - 1, frames)).astype(int)
