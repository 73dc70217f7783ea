"""Mode coverage on the Gaussian-mixture toy2d datasets (ring8, grid25).

The protocol of the mode-collapse literature (VEEGAN, PacGAN): draw N samples;
a mode is captured when at least one sample lies within `radius` (3) standard
deviations of its center; a sample is high quality when it lies within that
radius of some mode. `kl_uniform` is KL(histogram of the high-quality samples
over the modes || uniform), 0 for a perfectly balanced generator and log K for
one that puts everything on one mode.

cfg: num_samples (2,500 in the literature), radius (3.0).
"""

import jax
import numpy as np


def mode_stats(points_Nx2, centers_Kx2, std, radius=3.0):
  points, centers = np.asarray(points_Nx2, np.float64), np.asarray(centers_Kx2, np.float64)
  dist_NxK = np.linalg.norm(points[:, None] - centers[None], axis=-1)
  nearest = dist_NxK.argmin(1)
  good = dist_NxK[np.arange(len(points)), nearest] <= radius * std
  counts = np.bincount(nearest[good], minlength=len(centers))
  K = len(centers)
  if good.any():
    p = counts / counts.sum()
    kl = float(np.sum(p[p > 0] * np.log(p[p > 0] * K)))
  else:
    kl = float('nan')
  return {'modes': int((counts > 0).sum()), 'num_modes': K,
          'high_quality': float(good.mean()), 'kl_uniform': kl}


class Evaluator:

  def __init__(self, name, cfg, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    meta = ctx.data.info.metadata or {}
    if 'centers' not in meta:
      raise ValueError(f'evals.{name}: mode coverage needs a dataset whose metadata holds mode '
                       f'centers (toy2d/ring8, toy2d/grid25); {ctx.data.info.name!r} has none')
    self.centers, self.std = np.asarray(meta['centers']), float(meta['std'])

  def run(self, step, rstate, host_state, final):
    del rstate, final
    rng = self.ctx.key(self.name, step)
    points = self.ctx.family.sample(host_state(), rng, self.cfg.num_samples)['x']
    return mode_stats(points, self.centers, self.std, self.cfg.get('radius', 3.0))
