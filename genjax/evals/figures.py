"""Writes the pictures a family knows how to make (reconstructions, DDPM
against DDIM, a density heat map, ...) under workdir/figures at its own
cadence. The family provides them as `tools['figures'](state, rng, batch)`,
with `batch` a batch of real examples from `cfg.split`, returning
{name: figure}, where a figure is one of

  {'images': (N, H, W, C) in `value_range`, 'value_range': (lo, hi),
   optional 'rows_of': (N,) row keys, optional 'cols': int}   -> a PNG grid
  {'rgb': (H, W, 3) uint8}                                     -> a PNG as is

cfg: split (default the eval split), num_examples (how many real examples the
batch holds, default 16).
"""
import os

import jax
import numpy as np
from PIL import Image

from genjax import writers


def write_figure(path, fig):
  if 'rgb' in fig:
    Image.fromarray(np.asarray(fig['rgb'], np.uint8)).save(path)
    return path
  kwargs = {k: fig[k] for k in ('rows_of', 'cols') if fig.get(k) is not None}
  return writers.save_image_grid(path, fig['images'], fig['value_range'], **kwargs)


class Evaluator:

  def __init__(self, name, cfg, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    if 'figures' not in ctx.family.tools:
      raise ValueError(f"evals.{name}: the {ctx.family.name} family has no tools['figures']")

  def run(self, step, rstate, host_state, final):
    del rstate, final
    if jax.process_index() != 0:
      return {}
    batch = next(self.ctx.data.eval_batches(self.cfg.get('split'), max_batches=1))
    n = self.cfg.get('num_examples', 16)
    batch = {k: v[batch['mask']][:n] for k, v in batch.items() if k != 'mask'}
    rng = self.ctx.key(self.name, step)
    figures = self.ctx.family.tools['figures'](host_state(), rng, batch)
    directory = os.path.join(self.ctx.workdir, 'figures')
    os.makedirs(directory, exist_ok=True)
    for name, fig in figures.items():
      write_figure(os.path.join(directory, f'{name}_{step:07d}.png'), fig)
    return {}
