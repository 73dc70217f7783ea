"""Where results go: metrics (JSON lines + TensorBoard) and samples (PNG / text)."""
import json
import os
import time

import jax
import numpy as np
from PIL import Image


class MetricWriter:
  """Appends `{"step": s, "split": ..., **metrics}` to workdir/metrics.jsonl and
  writes the same scalars as TensorBoard events under workdir/tb (process 0 only)."""

  def __init__(self, workdir):
    self.active = jax.process_index() == 0
    if self.active:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
      self._tb = SummaryWriter(os.path.join(workdir, 'tb'))

  def write(self, step, split, metrics):
    if not self.active:
      return
    scalars = {k: float(v) for k, v in metrics.items()}
    self._jsonl.write(json.dumps({'step': int(step), 'split': split, 'time': time.time(), **scalars}) + '\n')
    self._jsonl.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(f'{split}/{k}', v, int(step))
    self._tb.flush()

  def close(self):
    if self.active:
      self._jsonl.close()
      self._tb.close()


def image_grid(images_NxHxWxC, num_levels, cols=None, scale=4):
  """uint8 (rows*H*scale, cols*W*scale, C) grid of images with values 0..num_levels-1."""
  x = np.asarray(images_NxHxWxC, np.float32) * (255.0 / (num_levels - 1))
  N, H, W, C = x.shape
  cols = cols or int(np.ceil(np.sqrt(N)))
  rows = -(-N // cols)
  grid = np.zeros((rows * (H + 1) + 1, cols * (W + 1) + 1, C), np.float32) + 64
  for i in range(N):
    r, c = divmod(i, cols)
    grid[1 + r * (H + 1):1 + r * (H + 1) + H, 1 + c * (W + 1):1 + c * (W + 1) + W] = x[i]
  grid = np.repeat(np.repeat(grid, scale, 0), scale, 1)
  return np.clip(grid, 0, 255).astype(np.uint8)


def decode_text(tokens_NxT):
  return [bytes(np.asarray(t, np.uint8).tolist()).decode('utf-8', errors='replace') for t in tokens_NxT]


def write_samples(directory, name, samples, info):
  """Writes samples as `name.png` (images) or `name.txt` (text); returns the path."""
  os.makedirs(directory, exist_ok=True)
  if info.modality == 'image':
    path = os.path.join(directory, name + '.png')
    grid = image_grid(samples, info.num_levels)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
  elif info.modality == 'text':
    path = os.path.join(directory, name + '.txt')
    with open(path, 'w') as f:
      for i, text in enumerate(decode_text(samples)):
        f.write(f'===== sample {i} =====\n{text}\n')
  else:
    path = os.path.join(directory, name + '.npy')
    np.save(path, np.asarray(samples))
  return path
