"""Where results go: metrics (JSON lines + TensorBoard) and samples (PNG / text)."""
import json
import os
import re
import time
import uuid
import zlib

import jax
import numpy as np
from PIL import Image


class MetricWriter:
  """Appends `{"step": s, "split": ..., **metrics}` to workdir/metrics.jsonl and
  writes the numeric ones as TensorBoard scalars under workdir/tb (process 0 only).
  `split` is 'train' or the evaluator's name; strings (such as the likelihood
  label) go to the JSON line only.

  With `config.log.wandb` = a project name, the numeric ones also go to a
  Weights & Biases run in workdir/wandb (`log.wandb_mode`: 'offline' needs no network;
  '' leaves it to wandb, i.e. $WANDB_MODE). A resumed run continues the same
  wandb run; its x-axis is the training step.
  """

  def __init__(self, workdir, config=None):
    self.active = jax.process_index() == 0
    self._wandb = None
    if self.active:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
      self._tb = SummaryWriter(os.path.join(workdir, 'tb'))
      if config is not None and config.get('log', {}).get('wandb'):
        self._wandb = _wandb_run(workdir, config)

  def write(self, step, split, metrics):
    if not self.active:
      return
    record = {k: v if isinstance(v, str) else float(v) for k, v in metrics.items()}
    self._jsonl.write(json.dumps({'step': int(step), 'split': split, 'time': time.time(), **record}) + '\n')
    self._jsonl.flush()
    for k, v in record.items():
      if not isinstance(v, str):
        self._tb.add_scalar(f'{split}/{k}', v, int(step))
    self._tb.flush()
    if self._wandb is not None:
      self._wandb.log({'step': int(step), **{f'{split}/{k}': v for k, v in record.items()
                                              if not isinstance(v, str)}})

  def close(self):
    if self.active:
      self._jsonl.close()
      self._tb.close()
      if self._wandb is not None:
        self._wandb.finish()
        self._wandb = None


def _wandb_run(workdir, config):
  """A wandb run in workdir/wandb; the id is kept there, so a resume continues it."""
  import wandb  # pylint: disable=g-import-not-at-top  (optional: genjax-families[wandb])
  root = os.path.join(workdir, 'wandb')
  os.makedirs(root, exist_ok=True)
  id_file = os.path.join(root, 'genjax_run_id')
  if os.path.exists(id_file):
    with open(id_file) as f:
      run_id = f.read().strip()
  else:
    run_id = uuid.uuid4().hex[:12]
    with open(id_file, 'w') as f:
      f.write(run_id)
  run = wandb.init(project=config.log.wandb, dir=workdir, id=run_id, resume='allow',
                   mode=config.log.get('wandb_mode') or None,
                   name=os.path.basename(os.path.abspath(workdir)), config=config.to_dict())
  run.define_metric('step')
  run.define_metric('*', step_metric='step')  # not wandb's own counter: resumes repeat steps
  return run


def to_unit(images, value_range):
  """Images in [lo, hi] -> float32 in [0, 1]; anything outside is an error."""
  lo, hi = value_range
  x = np.asarray(images, np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError('images hold NaN or Inf values')
  tol = 1e-3 * (hi - lo)
  if x.min() < lo - tol or x.max() > hi + tol:
    raise ValueError(f'images span [{x.min():.3g}, {x.max():.3g}], outside their stated range '
                     f'[{lo}, {hi}]; map them into it (e.g. clip) first')
  return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def image_grid(images_NxHxWxC, value_range, cols=None, scale=4, rows_of=None):
  """uint8 grid of images with values in `value_range` = (lo, hi).

  `rows_of` (N,) puts images with the same value (a class label) on one row,
  in ascending order of the value; otherwise the grid is filled row by row.
  """
  x = to_unit(images_NxHxWxC, value_range) * 255.0
  N, H, W, C = x.shape
  if rows_of is not None:
    rows_of = np.asarray(rows_of)
    groups = [np.flatnonzero(rows_of == v) for v in np.unique(rows_of)]
    cols = max(len(g) for g in groups)
    cells = [(r, c, i) for r, g in enumerate(groups) for c, i in enumerate(g)]
    rows = len(groups)
  else:
    cols = cols or int(np.ceil(np.sqrt(N)))
    rows = -(-N // cols)
    cells = [divmod(i, cols) + (i,) for i in range(N)]
  grid = np.zeros((rows * (H + 1) + 1, cols * (W + 1) + 1, C), np.float32) + 64
  for r, c, i in cells:
    grid[1 + r * (H + 1):1 + r * (H + 1) + H, 1 + c * (W + 1):1 + c * (W + 1) + W] = x[i]
  grid = np.repeat(np.repeat(grid, scale, 0), scale, 1)
  return np.clip(grid, 0, 255).astype(np.uint8)


def save_image_grid(path, images, value_range, title=None, **kwargs):
  """A PNG of `image_grid`, with `title` in a band above it (wrapped to its width)."""
  grid = image_grid(images, value_range, **kwargs)
  image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  if title:
    image = _titled(image, title)
  image.save(path)
  return path


def _titled(image, title, size=12, pad=4):
  from PIL import ImageDraw, ImageFont  # pylint: disable=g-import-not-at-top
  font = ImageFont.load_default(size=size)
  measure = ImageDraw.Draw(Image.new('L', (1, 1)))
  width = max(image.width, 240)
  lines = ['']
  for word in title.split():
    line = f'{lines[-1]} {word}'.strip()
    if lines[-1] and measure.textlength(line, font=font) > width - 2 * pad:
      lines.append(word)
    else:
      lines[-1] = line
  band = len(lines) * (size + 3) + pad
  out = Image.new(image.mode, (width, image.height + band), 'white')
  out.paste(image, ((width - image.width) // 2, band))
  draw = ImageDraw.Draw(out)
  for i, line in enumerate(lines):
    draw.text((pad, pad // 2 + i * (size + 3)), line, fill='black', font=font)
  return out


def sampler_settings(sample_config):
  """The settings of --mode=sample that change what is drawn: config.sample less
  the figures' own (figure_*), sorted by name."""
  return {k: v for k, v in sorted(dict(sample_config).items()) if not k.startswith('figure_')}


def settings_name(settings):
  """'decode=mean,num_samples=64': settings as a file-name part (the style of a
  sweep's run directories); characters a file name should not hold become '_',
  and a value longer than 24 characters is cut, with a hash of it."""
  parts = []
  for key, value in settings.items():
    text = f'{value:g}' if isinstance(value, float) else str(value)
    safe = re.sub(r'[^A-Za-z0-9.+-]', '_', text)
    if len(safe) > 24:
      safe = f'{safe[:16]}~{zlib.crc32(text.encode()):08x}'
    parts.append(f'{key}={safe}')
  return ','.join(parts)


def labelled_rows(path, rows, value_range, width=None):
  """A PNG with one row of images per entry of `rows` ({label: images}), the
  label on the left (the comparison's samples, the completion figure)."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  n = max(len(x) for x in rows.values())
  fig = Figure(figsize=(width or 0.6 * n + 1.6, 0.75 * len(rows) + 0.3))
  axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
  for ax, (label, x) in zip(axes, rows.items()):
    # One grey scale for every row: the data's range, not each row's own.
    ax.imshow(image_grid(x, value_range, cols=len(x), scale=2).squeeze(), cmap='gray',
              interpolation='nearest', vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha='right', va='center', fontsize=9)
  fig.tight_layout()
  fig.savefig(path)


def scatter(path, points_Nx2, data_Mx2=None, centers_Kx2=None, title=None):
  """A PNG of 2-D samples over the data, with the mixture's mode centers if known."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(5, 5), dpi=100)
  ax = fig.subplots()
  if data_Mx2 is not None:
    ax.scatter(*np.asarray(data_Mx2).T, s=2, c='0.75', label='data', rasterized=True)
  ax.scatter(*np.asarray(points_Nx2).T, s=2, c='tab:blue', label='samples', rasterized=True)
  if centers_Kx2 is not None:
    ax.scatter(*np.asarray(centers_Kx2).T, s=40, marker='x', c='tab:red', label='modes')
  ax.set_aspect('equal')
  # Below the axes: inside, the legend covered a mode of the mixture.
  ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.03), ncol=3, markerscale=3, fontsize=8,
            frameon=False)
  if title:
    ax.set_title(title, fontsize=9, wrap=True)
  fig.tight_layout()
  fig.savefig(path)
  return path


def decode_text(tokens_NxT):
  return [bytes(np.asarray(t, np.uint8).tolist()).decode('utf-8', errors='replace') for t in tokens_NxT]


def write_samples(directory, name, samples, info, data=None, title=None):
  """Writes a family's samples (a batch-like dict, see families.base) and returns the path.

  Images become a PNG grid (one row per class when the samples carry labels),
  text a .txt file, points a scatter PNG over `data` (points of the dataset)
  with the mode centers from the dataset's metadata, plus the raw .npy.
  `title` heads the grid or the plot (the first line of a text file).
  """
  os.makedirs(directory, exist_ok=True)
  if 'image' in samples:
    path = os.path.join(directory, name + '.png')
    return save_image_grid(path, samples['image'], info.value_range, title=title,
                           rows_of=samples.get('label'))
  if 'tokens' in samples:
    path = os.path.join(directory, name + '.txt')
    with open(path, 'w') as f:
      if title:
        f.write(f'# {title}\n')
      for i, text in enumerate(decode_text(samples['tokens'])):
        f.write(f'===== sample {i} =====\n{text}\n')
    return path
  if 'x' in samples:
    np.save(os.path.join(directory, name + '.npy'), np.asarray(samples['x']))
    centers = (info.metadata or {}).get('centers')
    return scatter(os.path.join(directory, name + '.png'), samples['x'], data,
                   None if centers is None else np.asarray(centers),
                   title=title or f'{info.name}: {name}')
  raise ValueError(f"samples must hold 'image', 'tokens' or 'x'; got keys {sorted(samples)}")
