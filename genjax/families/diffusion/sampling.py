"""The diffusion family's host-side sampling: the compiled DDPM / DDIM loop over
the guided denoiser, the way back from model space to data, and what a sample
costs in network evaluations."""
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np

from genjax.families.diffusion import samplers


def to_output(x, info, point_scale):
  """Model space back to data: image levels in [0, L-1] (floats), or points."""
  x = np.asarray(x)
  if info.modality == 'image':
    return np.clip((x + 1.0) * 0.5 * (info.num_levels - 1), 0, info.num_levels - 1)
  return x * point_scale


def make(config, info, apply, sched, num_classes, null, point_scale):
  """generate, to_output, sample_labels, sample, nfe and sampler_settings, for
  the denoiser `apply` under `config.sample`."""
  sc, T = config.sample, sched.num_steps
  is_image = info.modality == 'image'
  out_fn = functools.partial(to_output, info=info, point_scale=point_scale)

  @functools.partial(jax.jit, static_argnames=('sampler', 'steps', 'scale', 'num', 'path'))
  def generate(params, rng, label, sampler, steps, eta, scale, num, path=False):
    predict, _ = samplers.guided(apply, params, label, scale, num_classes, null)
    k_init, k_run = jax.random.split(rng)
    z = jax.random.normal(k_init, (num,) + tuple(info.shape))
    if sampler == 'ddpm':
      return samplers.ddpm(predict, sched, z, k_run, sc.variance, sc.clip and is_image, path=path)
    ts = samplers.ddim_timesteps(T, steps)
    return samplers.ddim(predict, sched, z, k_run, ts, eta, sc.clip and is_image, path=path)

  def sample_labels(num):
    return jnp.arange(num, dtype=jnp.int32) % num_classes if num_classes else None

  def sample(state, rng, num_samples, sampler=None, steps=None, scale=None):
    label = sample_labels(num_samples)
    sampler = sampler or sc.sampler
    steps = T if sampler == 'ddpm' else (steps or sc.ddim_steps)
    x = generate(state.ema_params, rng, label, sampler, steps,
                 sc.eta, sc.guidance if scale is None else scale, num_samples)
    out = {'image' if is_image else 'x': out_fn(x)}
    if num_classes:
      out['label'] = np.asarray(label)
    return out

  def nfe(sampler, steps=None, scale=None):
    """Network evaluations per sample (2 passes per step when guided)."""
    scale = sc.guidance if scale is None else scale
    passes = 2 if num_classes and scale not in (0, 1) else 1
    return samplers.num_function_evals(sampler, sched, steps or sc.ddim_steps, passes)

  def sampler_settings(ddim_steps=(10, 50), full_chain=True):
    """(label, `sample` keyword arguments, network evaluations per sample) for DDIM at
    each step count and, with full_chain, DDPM over all T steps."""
    out = [(f'DDIM {n}', dict(sampler='ddim', steps=n), nfe('ddim', n)) for n in ddim_steps]
    return out + ([(f'DDPM {T}', dict(sampler='ddpm'), nfe('ddpm'))] if full_chain else [])

  return types.SimpleNamespace(generate=generate, to_output=out_fn, sample_labels=sample_labels,
                               sample=sample, nfe=nfe, sampler_settings=sampler_settings)
