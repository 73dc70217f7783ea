"""tools['figures'] of the diffusion family (see genjax.evals.figures): DDPM
against DDIM from the same noise, inpainting, denoising and the reverse
process, with the network evaluations per sample in the names."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from genjax.families.diffusion import samplers


def make(config, info, apply, sched, generate, to_output, nfe, sample_labels, num_classes, null):
  sc = config.sample
  T = sched.num_steps
  L = info.num_levels

  def to_model(levels):
    return jnp.asarray(levels, jnp.float32) * (2.0 / (L - 1)) - 1.0

  @functools.partial(jax.jit, static_argnames=('scale', 'sampler'))
  def _inpaint(params, rng, x0, mask, label, scale, sampler):
    predict, _ = samplers.guided(apply, params, label, scale, num_classes, null)
    k_init, k_run = jax.random.split(rng)
    z = jax.random.normal(k_init, x0.shape)
    if sampler == 'ddpm':
      return samplers.ddpm(predict, sched, z, k_run, sc.variance, sc.clip, known=(mask, x0))
    ts = samplers.ddim_timesteps(T, sc.ddim_steps)
    return samplers.ddim(predict, sched, z, k_run, ts, 1.0, sc.clip, known=(mask, x0))

  def inpaint(params, rng, image, mask, label=None, scale=None, sampler='ddpm'):
    """Fills the pixels where `mask` is False; the others are returned exactly."""
    scale = sc.guidance if scale is None else scale
    label = None if label is None or not num_classes else jnp.asarray(label, jnp.int32)
    x = _inpaint(params, rng, to_model(image), jnp.asarray(mask), label, scale, sampler)
    return np.where(mask, np.asarray(image, np.float32), to_output(x))

  @functools.partial(jax.jit, static_argnames=('num_steps',))
  def _denoise(params, rng, y, sigma, num_steps):
    label = jnp.full(y.shape[:1], null, jnp.int32) if num_classes else None
    predict, _ = samplers.guided(apply, params, label, 1.0, num_classes, null)
    return samplers.denoise(predict, sched, y, sigma, rng, num_steps)

  def figures(state, rng, batch):
    params = state.ema_params
    k_samp, k_inp, k_noise, k_den, k_path = jax.random.split(rng, 5)
    vr = (0, L - 1)
    figs = {}

    # DDPM and DDIM from the same initial noise and labels, one row each.
    n = max(num_classes, 8)
    label = sample_labels(n)
    rows, names = [], []
    for sampler, steps, eta in [('ddpm', T, 1.0)] + [('ddim', s, 0.0) for s in sc.figure_ddim_steps]:
      rows.append(to_output(generate(params, k_samp, label, sampler, steps, eta, sc.guidance, n)))
      names.append(f'{sampler}{steps}-nfe{nfe(sampler, steps)}')
    figs['samplers_' + '_'.join(names)] = dict(
        images=np.concatenate(rows), value_range=vr, rows_of=np.repeat(np.arange(len(rows)), n))

    # Inpainting: the bottom half is unknown; rows: original, known part, two fills.
    image = np.asarray(batch['image'][:8], np.float32)
    k = image.shape[0]
    H = image.shape[1]
    mask = np.zeros(image.shape, bool)
    mask[:, :H // 2] = True
    lab = batch.get('label')
    lab = None if lab is None else np.asarray(lab[:k])
    fills = [inpaint(params, jax.random.fold_in(k_inp, i), image, mask, lab) for i in range(2)]
    figs[f'inpaint_ddpm-nfe{nfe("ddpm")}'] = dict(
        images=np.concatenate([image, np.where(mask, image, 0.0)] + fills), value_range=vr,
        rows_of=np.repeat(np.arange(4), k))

    # Denoising at noise std 0.3 (model space): clean, noisy, one-step x0, DDIM.
    sigma = 0.3
    x = to_model(image)
    y = x + sigma * jax.random.normal(k_noise, x.shape)
    once, out = _denoise(params, k_den, y, sigma, 20)
    t = int(samplers.noise_level_step(sched, sigma))
    figs[f'denoise_sigma0.3_t{t}_ddim20'] = dict(
        images=np.concatenate([image, to_output(jnp.clip(y, -1, 1)), to_output(once),
                               to_output(out)]),
        value_range=vr, rows_of=np.repeat(np.arange(4), k))

    # The reverse process: x_t of 4 DDPM paths at 10 steps from T-1 to 0.
    lab4 = sample_labels(4)
    _, path = generate(params, k_path, lab4, 'ddpm', T, 1.0, sc.guidance, 4, path=True)
    frames = samplers.strip_indices(T, 10)
    strip = np.asarray(path)[frames]  # (F, 4, H, W, C)
    strip = np.swapaxes(strip, 0, 1).reshape((-1,) + strip.shape[2:])
    figs['reverse_process_ddpm'] = dict(images=to_output(np.clip(strip, -1, 1)), value_range=vr,
                                        rows_of=np.repeat(np.arange(4), len(frames)))
    return figs

  figures.inpaint = inpaint
  return figures
