"""The flow's figures (format in genjax.evals.figures): for points, a heat map
of the learnt density and samples at several temperatures; for images,
samples at several temperatures (a row each) and real images beside x -> z -> x."""
import io

import jax
import numpy as np

GRID = 300  # heat-map resolution per axis
LOG_RANGE = 8.0  # nats below the peak that the heat map's colours span
SAMPLES_PER_TEMPERATURE = 8


def _render(fig):
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  buf.seek(0)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.asarray(Image.open(buf).convert('RGB'))


def extent(points_Nx2, centers=None, margin=0.25):
  """A square window around the data (and the mixture's modes, when known)."""
  pts = np.asarray(points_Nx2, np.float64)
  if centers is not None:
    pts = np.concatenate([pts, np.asarray(centers)])
  lo, hi = np.quantile(pts, 0.005, 0), np.quantile(pts, 0.995, 0)
  mid, half = (lo + hi) / 2, (hi - lo).max() / 2 * (1 + margin) + 1e-3
  return mid - half, mid + half


def density_grid(log_prob, lo, hi, n=GRID):
  """(n, n) log-density on a grid over [lo, hi]; row 0 is the top (largest y)."""
  xs = np.linspace(lo[0], hi[0], n)
  ys = np.linspace(hi[1], lo[1], n)
  gx, gy = np.meshgrid(xs, ys)
  pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
  return np.asarray(log_prob(pts)).reshape(n, n)


def heat_map(logp_NxN, lo, hi, title):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(5.6, 5), dpi=100)
  ax = fig.subplots()
  # Log scale: sharp modes (ring8's std is 0.01) would hide the others linearly.
  top = logp_NxN.max()
  im = ax.imshow(np.clip(logp_NxN, top - LOG_RANGE, top), extent=(lo[0], hi[0], lo[1], hi[1]),
                 cmap='magma', interpolation='nearest')
  fig.colorbar(im, ax=ax, fraction=0.046, label='log density')
  ax.set_title(title)
  fig.tight_layout()
  return _render(fig)


def scatter_by_temperature(samples, data_Mx2, lo, hi, title):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(3.2 * len(samples), 3.4), dpi=100)
  axes = fig.subplots(1, len(samples))
  for ax, (t, pts) in zip(np.atleast_1d(axes), samples.items()):
    ax.scatter(*data_Mx2.T, s=1, c='0.75', rasterized=True)
    ax.scatter(*np.asarray(pts).T, s=1, c='tab:blue', rasterized=True)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect('equal')
    ax.set_title(f'T = {t}')
  fig.suptitle(title)
  fig.tight_layout()
  return _render(fig)


def make(state, rng, batch, *, tools, draw, info, temperatures):
  keys = jax.random.split(rng, len(temperatures))
  if info.modality == 'points':
    centers = (info.metadata or {}).get('centers')
    samples = {t: draw(state, k, 2000, t)['x'] for t, k in zip(temperatures, keys)}
    lo, hi = extent(batch['x'], centers)
    logp = density_grid(lambda x: tools['log_prob'](state, x), lo, hi)
    return {
        'density': {'rgb': heat_map(logp, lo, hi, f'flow density on {info.name}')},
        'samples_by_temperature': {'rgb': scatter_by_temperature(
            samples, np.asarray(batch['x']), lo, hi, f'flow samples on {info.name}')},
    }
  n = SAMPLES_PER_TEMPERATURE
  images = np.concatenate([draw(state, k, n, t)['image'] for t, k in zip(temperatures, keys)])
  real = np.asarray(batch['image'])[:n]
  # x -> z -> x at the bin centres; the floor recovers the integer image.
  back = tools['decode'](state, tools['encode'](state, real.astype(np.float32) + 0.5))
  back = np.clip(np.floor(back), 0, info.num_levels - 1)
  rows = np.concatenate([real, back]).astype(np.float32)
  return {
      'samples_by_temperature': {'images': images, 'value_range': info.value_range,
                                 'rows_of': np.repeat(np.arange(len(temperatures)), n)},
      'encode_decode': {'images': rows, 'value_range': info.value_range, 'cols': len(real)},
  }
