"""Writes the family's samples under workdir/samples at its own cadence:
PNG grids for images (a row per class for conditional samples), text files,
scatter plots over the data for points. cfg: num_samples."""
import time

import jax

from genjax import evals


class Evaluator:

  def __init__(self, name, cfg, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx

  def run(self, step, rstate, host_state, final):
    del rstate, final
    if jax.process_index() != 0 or self.cfg.num_samples <= 0:
      return {}
    t = time.perf_counter()
    samples, path = self.ctx.sample(host_state(), step, self.cfg.num_samples)
    return evals.Output({'seconds': time.perf_counter() - t}, samples, path)
