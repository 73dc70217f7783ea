"""The VAE's pictures (see genjax.evals.figures for the format):

  reconstructions   images: rows of 8 originals, each followed by a row of their reconstructions
  prior_samples     images: decoder means of z ~ N(0, I) (top half) and pixel draws (bottom half)
  interpolation     images: one row per pair, decoder means along the line between the two
                    posterior means (the real pair at the ends)
  latent            the posterior means coloured by label (a 2-D latent as is; a larger one
                    by its first two principal components, said in the title)
"""
import io

import jax
import numpy as np

NUM_STEPS = 10  # interpolation: points between and including the two ends


def make_figures(tools, info, config, state, rng, batch):
  del config
  x = batch['image'] if 'image' in batch else batch['x']
  keys = jax.random.split(rng, 4)
  figs = {}
  if info.modality == 'image':
    vr = info.value_range
    n = min(len(x), 16)
    recon = tools['reconstruct'](state, x[:n], keys[0], 'mean')
    rows = []
    for i in range(0, n, 8):
      rows += [np.asarray(x[i:i + 8], np.float32), recon[i:i + 8]]
    figs['reconstructions'] = {'images': np.concatenate(rows), 'value_range': vr, 'cols': 8}
    mean, _ = tools['encode'](state, x[:1])
    z = np.asarray(jax.random.normal(keys[1], (32, mean.shape[-1])))
    figs['prior_samples'] = {
        'images': np.concatenate([tools['decode'](state, z[:16], keys[2], 'mean'),
                                  tools['decode'](state, z[16:], keys[2], 'draw').astype(np.float32)]),
        'value_range': vr, 'cols': 8}
    figs['interpolation'] = interpolation(tools, state, x, vr)
  if 'label' in batch and len(x) >= 2:
    mean, _ = tools['encode'](state, x)
    figs['latent'] = {'rgb': latent_plot(mean, batch['label'])}
  return figs


def interpolation(tools, state, x, value_range, num_pairs=4):
  """Pairs (0, 1), (2, 3), ...: real image, decoded path, real image."""
  mean, _ = tools['encode'](state, x[:2 * num_pairs])
  t = np.linspace(0.0, 1.0, NUM_STEPS)[:, None]
  rows = []
  for p in range(min(num_pairs, len(mean) // 2)):
    a, b = mean[2 * p], mean[2 * p + 1]
    path = tools['decode'](state, (1 - t) * a + t * b, None, 'mean')
    rows.append(np.concatenate([np.asarray(x[2 * p:2 * p + 1], np.float32), path,
                                np.asarray(x[2 * p + 1:2 * p + 2], np.float32)]))
  return {'images': np.concatenate(rows), 'value_range': value_range, 'cols': NUM_STEPS + 2}


def latent_plot(mean_NxZ, labels_N):
  """uint8 RGB scatter of the posterior means, coloured by label."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  mean = np.asarray(mean_NxZ, np.float64)
  if mean.shape[1] == 2:
    pts, title = mean, 'posterior means (2-D latent)'
  else:  # first two principal components
    centred = mean - mean.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pts, title = centred @ vt[:2].T, f'posterior means, first 2 PCs of the {mean.shape[1]}-D latent'
  fig = Figure(figsize=(5.5, 5), dpi=100)
  ax = fig.subplots()
  labels = np.asarray(labels_N)
  sc = ax.scatter(pts[:, 0], pts[:, 1], c=labels, cmap='tab10', s=10,
                  vmin=-0.5, vmax=max(9.5, labels.max() + 0.5))
  fig.colorbar(sc, ax=ax, ticks=np.unique(labels), label='label')
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  buf.seek(0)
  return np.asarray(Image.open(buf).convert('RGB'))
