"""Anomaly detection: ROC AUC of a family's per-example anomaly score, the test
split (inliers) against out-of-distribution sets. Any family with
`tools['score'](state, rng, batch) -> (B,)` (higher = more anomalous: a negative
log-likelihood or its bound) can use it.

Out-of-distribution sets, each as many examples as the inliers:
  noise      images: uniform random levels per subpixel; points: uniform over
             the inliers' bounding box enlarged by half its size on each side
  inverted   images only: (num_levels - 1) - x
  class_<c>  the split's examples of class `held_out_label` (when >= 0), which are
             then not counted as inliers; meaningful for a model trained without
             that class (a config's model.exclude_label)

Reports auc_<set> (0.5 = chance, 1 = every outlier scores above every inlier)
and the mean score of each set.

cfg: split (default the eval split), held_out_label (-1 = none), max_examples
(-1 = the whole split), batch_size (default 256).
"""
import zlib

import jax
import numpy as np


def rank_average(values_N):
  """Ranks 1..N of the values, ties given the mean of the ranks they span."""
  values = np.asarray(values_N)
  order = np.argsort(values, kind='mergesort')
  sorted_v = values[order]
  # Boundaries of runs of equal values in sorted order.
  starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
  ends = np.r_[starts[1:], len(values)]
  mean_rank = (starts + ends + 1) / 2.0  # mean of starts+1 .. ends
  ranks = np.empty(len(values), np.float64)
  ranks[order] = np.repeat(mean_rank, ends - starts)
  return ranks


def roc_auc(scores_inliers, scores_outliers):
  """P(outlier score > inlier score) + P(equal) / 2, by the rank-sum (Mann-Whitney U)."""
  a, b = np.asarray(scores_inliers, np.float64), np.asarray(scores_outliers, np.float64)
  if not len(a) or not len(b):
    return float('nan')
  ranks = rank_average(np.concatenate([a, b]))
  u = ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2.0
  return float(u / (len(a) * len(b)))


def roc_curve(scores_inliers, scores_outliers):
  """(false positive rate, true positive rate) at every threshold, outliers
  being the positives (higher score = more anomalous); its area is roc_auc."""
  a, b = np.asarray(scores_inliers, np.float64), np.asarray(scores_outliers, np.float64)
  thresholds = np.unique(np.concatenate([a, b]))[::-1]
  fpr = np.r_[0.0, [(a >= t).mean() for t in thresholds]]
  tpr = np.r_[0.0, [(b >= t).mean() for t in thresholds]]
  return fpr, tpr


def ood_sets(x, info, rng):
  """{name: examples} made from the inliers x (numpy)."""
  rng = np.random.default_rng(rng)
  if info.modality == 'image':
    hi = info.num_levels - 1
    noise = rng.integers(0, hi + 1, size=x.shape).astype(x.dtype)
    return {'noise': noise, 'inverted': (hi - x.astype(np.int64)).astype(x.dtype)}
  lo, hi = x.min(0), x.max(0)
  pad = 0.5 * (hi - lo)
  return {'noise': rng.uniform(lo - pad, hi + pad, size=x.shape).astype(x.dtype)}


class Evaluator:

  def __init__(self, name, cfg, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    if 'score' not in ctx.family.tools:
      raise ValueError(f"evals.{name}: the {ctx.family.name} family has no tools['score']")

  def _examples(self):
    key = 'image' if self.ctx.data.info.modality == 'image' else 'x'
    xs, labels = [], []
    for batch in self.ctx.data.eval_batches(self.cfg.get('split')):
      xs.append(batch[key][batch['mask']])
      if 'label' in batch:
        labels.append(batch['label'][batch['mask']])
    x = np.concatenate(xs)
    label = np.concatenate(labels) if labels else None
    n = self.cfg.get('max_examples', -1)
    if 0 < n < len(x):
      idx = np.linspace(0, len(x) - 1, n).astype(np.int64)
      x, label = x[idx], None if label is None else label[idx]
    return key, x, label

  def _scores(self, state, rng, key, x):
    bs = self.cfg.get('batch_size', 256)
    score = self.ctx.family.tools['score']
    return np.concatenate([np.asarray(score(state, jax.random.fold_in(rng, i), {key: x[i:i + bs]}))
                           for i in range(0, len(x), bs)])

  def run(self, step, rstate, host_state, final):
    del rstate, final
    if jax.process_index() != 0:
      return {}
    key, x, label = self._examples()
    rng = self.ctx.key(self.name, step)
    held = self.cfg.get('held_out_label', -1)
    sets = {}
    if held >= 0 and label is not None:
      sets[f'class_{held}'] = x[label == held]
      x = x[label != held]
    sets.update(ood_sets(x, self.ctx.data.info, int(zlib.crc32(self.name.encode())) + step))
    state = host_state()
    inlier = self._scores(state, jax.random.fold_in(rng, 0), key, x)
    out = {'score_inliers': float(inlier.mean()), 'inliers': len(inlier)}
    for i, (name, xo) in enumerate(sets.items()):
      s = self._scores(state, jax.random.fold_in(rng, i + 1), key, xo)
      out[f'auc_{name}'] = roc_auc(inlier, s)
      out[f'score_{name}'] = float(s.mean())
    return out
