"""Density estimation on toy2d: the model's test NLL beside the true density's.

For the Gaussian mixtures (ring8, grid25: centers and std in the dataset's
metadata) the true density is known, so the evaluator reports its
cross-entropy on the same split (`true_nll`, a Monte-Carlo estimate of the
mixture's entropy) and `gap_nats` = nll - true_nll, the KL divergence from the
data to the model up to Monte-Carlo error. The model's density comes from the
family's `tools['log_prob'](state, x) -> (N,)` log-densities.

cfg: split (default the eval split), max_batches (-1 = all).
"""
import numpy as np
from scipy.special import logsumexp


def mixture_log_prob(x_NxD, centers_KxD, std):
  """log p(x) under the equal-weight isotropic Gaussian mixture."""
  x, c = np.asarray(x_NxD, np.float64), np.asarray(centers_KxD, np.float64)
  d2 = ((x[:, None] - c[None]) ** 2).sum(-1)
  D = x.shape[1]
  log_k = -0.5 * d2 / std ** 2 - D * np.log(std) - 0.5 * D * np.log(2 * np.pi)
  return logsumexp(log_k, axis=1) - np.log(len(c))


class Evaluator:

  def __init__(self, name, cfg, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    if 'log_prob' not in ctx.family.tools:
      raise ValueError(f"evals.{name}: the {ctx.family.name} family has no tools['log_prob']")
    if ctx.data.info.modality != 'points':
      raise ValueError(f'evals.{name}: density evaluation reads points (toy2d); '
                       f'{ctx.data.info.name!r} holds {ctx.data.info.modality}')
    meta = ctx.data.info.metadata or {}
    self.centers = np.asarray(meta['centers']) if 'centers' in meta else None
    self.std = meta.get('std')

  def run(self, step, rstate, host_state, final):
    del step, rstate
    state, log_prob = host_state(), self.ctx.family.tools['log_prob']
    model, true = [], []
    max_batches = -1 if final else self.cfg.get('max_batches', -1)
    for batch in self.ctx.data.eval_batches(self.cfg.get('split'), max_batches):
      x = batch['x'][batch['mask']]
      if not len(x):
        continue
      model.append(np.asarray(log_prob(state, x), np.float64))
      if self.centers is not None:
        true.append(mixture_log_prob(x, self.centers, self.std))
    out = {'nll': float(-np.concatenate(model).mean()), 'examples': int(sum(map(len, model)))}
    if true:
      out['true_nll'] = float(-np.concatenate(true).mean())
      out['gap_nats'] = out['nll'] - out['true_nll']
    return out
