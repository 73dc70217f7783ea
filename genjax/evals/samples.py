"""Writes the family's samples under workdir/samples at its own cadence:
PNG grids for images (a row per class for conditional samples), text files,
scatter plots over the data for points. cfg: num_samples."""
import time

import jax


class Evaluator:

  def __init__(self, name, cfg, ex):
    self.name, self.cfg, self.ex = name, cfg, ex

  def run(self, step, rstate, host_state, final):
    del rstate, final
    if jax.process_index() != 0 or self.cfg.num_samples <= 0:
      return {}
    t = time.perf_counter()
    self.ex.last_samples = self.ex.sample(host_state(), step, self.cfg.num_samples)
    return {'seconds': time.perf_counter() - t}
