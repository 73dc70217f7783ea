"""Sample quality and diversity of images in the feature space of the shared
classifier (`genjax.evals.classifier`, trained on the same dataset):

  fd          Fréchet distance between Gaussians fitted to the features of the
              samples and of a real split (FID's formula, a small in-domain net
              instead of Inception);
  precision   share of samples inside the real data's k-NN manifold, and
  recall      share of real examples inside the samples' k-NN manifold
              (Kynkäänniemi et al. 2019, k = 3), exact, in blocks of rows so
              that memory does not grow with the square of the set size.

Beside them: bootstrap intervals for each (`frechet_interval`, `mean_interval`
over the per-example indicators of `knn_indicators`), and `sharpness`, the
Laplacian's variance in pixel space, for samples that are blurrier than data.

cfg: num_samples (1,000), split (the real reference, default 'train'),
k (3), optional classifier settings as in genjax.evals.classifier.
"""

import jax
import numpy as np
import threadpoolctl  # a dependency of scikit-learn

from genjax.evals import classifier


def _gaussian(x_NxD):
  x = np.asarray(x_NxD, np.float64)
  return x.mean(0), np.cov(x, rowvar=False)


def _sqrtm_psd(s_DxD):
  w, v = np.linalg.eigh(s_DxD)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _frechet(mu_a, s_a, mu_b, s_b, root_b):
  """FD of two Gaussians, given the symmetric square root of S_b (the reference's,
  computed once when a bootstrap refits only the other side)."""
  # Tr (S_a S_b)^(1/2) = Tr (S_b^(1/2) S_a S_b^(1/2))^(1/2), a symmetric PSD matrix.
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_b @ s_a @ root_b), 0, None)).sum()
  return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)


def frechet_distance(a_NxD, b_MxD):
  """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), in float64."""
  mu_b, s_b = _gaussian(b_MxD)
  return _frechet(*_gaussian(a_NxD), mu_b, s_b, _sqrtm_psd(s_b))


# Distances per block: a block is one float64 and one bool array of this many
# entries, so memory stays flat however large the sets grow.
_BLOCK = 1 << 24


def _rows_per_block(n, chunk):
  return chunk or max(1, _BLOCK // max(n, 1))


def _augment(x_NxD):
  """([x, 1, |x|^2], [-2x, |x|^2, 1]): one matmul of a left and a right row then
  gives the squared distance |a|^2 + |b|^2 - 2ab, with no pass over the block
  afterwards to add the norms (such passes are memory-bound, the matmul is not)."""
  x = np.asarray(x_NxD, np.float64)
  sq_Nx1 = (x ** 2).sum(1, keepdims=True)
  one_Nx1 = np.ones_like(sq_Nx1)
  left = np.concatenate([x, one_Nx1, sq_Nx1], 1)
  return left, np.concatenate([-2 * x, sq_Nx1, one_Nx1], 1).T.copy()


def _sq_radii(left, right_DxN, k, chunk):
  n = right_DxN.shape[1]
  if not 0 < k < n:
    raise ValueError(f'k-NN radii: k={k} needs 0 < k < the set size ({n}); pass a smaller k '
                     'or more points')
  rows = _rows_per_block(n, chunk)
  block = np.empty((rows, n))
  r2_N = np.empty(n)
  for start in range(0, n, rows):
    d2 = block[:min(rows, n - start)]
    np.matmul(left[start:start + len(d2)], right_DxN, out=d2)
    i = np.arange(len(d2))
    d2[i, start + i] = np.inf  # the point itself, by index: a duplicate still counts
    for _ in range(k):  # k argmins beat a partition of the row when k is small
      j = d2.argmin(1)
      r2_N[start:start + len(d2)] = d2[i, j]
      d2[i, j] = np.inf
  return np.clip(r2_N, 0, None)


def knn_radii(x_NxD, k, chunk=None):
  """Distance of each point to its k-th nearest other point (a duplicate of it
  is one of them, at distance 0), `chunk` rows at a time (default: rows that
  fill a block of _BLOCK distances). Float64, matmul form, like the brute force."""
  left, right = _augment(x_NxD)
  return np.sqrt(_sq_radii(left, right, k, chunk))


def knn_indicators(real_NxD, fake_MxD, k=3, chunk=None):
  """(in_real_manifold_M, in_fake_manifold_N): whether each sample lies within
  the k-NN radius of some real example (their mean is precision), and whether
  each real example lies within that of some sample (the mean is recall).
  Compares squared distances, in blocks of `chunk` samples against all real
  examples."""
  real_left, real_right = _augment(real_NxD)
  fake_left, fake_right = _augment(fake_MxD)
  real_r2_N = _sq_radii(real_left, real_right, k, chunk)
  fake_r2_M = _sq_radii(fake_left, fake_right, k, chunk)
  n, m = len(real_r2_N), len(fake_r2_M)
  rows = _rows_per_block(n, chunk)
  block, inside = np.empty((rows, n)), np.empty((rows, n), bool)
  in_real_M, in_fake_N = np.zeros(m, bool), np.zeros(n, bool)
  for start in range(0, m, rows):
    d2 = block[:min(rows, m - start)]
    np.matmul(fake_left[start:start + len(d2)], real_right, out=d2)
    hit = inside[:len(d2)]
    in_real_M[start:start + len(d2)] = np.less_equal(d2, real_r2_N, out=hit).any(1)
    in_fake_N |= np.less_equal(d2, fake_r2_M[start:start + len(d2), None], out=hit).any(0)
  return in_real_M, in_fake_N


def knn_precision_recall(real_NxD, fake_MxD, k=3):
  in_real_M, in_fake_N = knn_indicators(real_NxD, fake_MxD, k)
  return float(in_real_M.mean()), float(in_fake_N.mean())


def _resampled(stat_fn, n, reps, seed):
  rng = np.random.default_rng(seed)
  return np.array([stat_fn(rng.integers(0, n, n)) for _ in range(reps)])


def _percentiles(stats_R, level):
  return tuple(float(q) for q in np.quantile(stats_R, [(1 - level) / 2, (1 + level) / 2]))


def bootstrap(stat_fn, n, reps=200, seed=0, level=0.95, recenter=False):
  """Percentile interval (lo, hi) of stat_fn(indices) over `reps` resamples of
  n indices with replacement; the same seed gives the same interval.

  recenter: for a plug-in statistic that a resample biases (an entropy, a
  count of modes hit), move the resamples by their mean's excess over the
  estimate, as frechet_interval does, so the interval gives the estimate's
  spread around it."""
  stats_R = _resampled(stat_fn, n, reps, seed)
  if recenter:
    stats_R = stats_R - (np.nanmean(stats_R) - stat_fn(np.arange(n)))
  return _percentiles(stats_R, level)


def mean_interval(values_N, reps=200, seed=0, level=0.95):
  """Interval of a mean of per-example values: precision from in_real_manifold_M,
  recall from in_fake_manifold_N (the other set held fixed), sharpness from
  laplacian_variance."""
  values = np.asarray(values_N, np.float64)
  return bootstrap(lambda idx: values[idx].mean(), len(values), reps, seed, level)


def frechet_interval(fake_MxD, real_NxD, reps=200, seed=0, level=0.95):
  """Interval of frechet_distance(fake, real) with the samples resampled.

  The real side's Gaussian and its square root are fitted once, so that a
  resample costs a D x D covariance and eigensolve; BLAS runs them on one
  thread, as threads cost more than they save on matrices this small (and
  far more on a busy machine). FD's estimate is biased upward, a resample's
  (about 63% distinct samples) more so, which puts the resamples' percentile
  interval above the estimate once D is large next to M: the interval is
  moved down by that excess (the resamples' mean minus the estimate), so it
  gives the estimate's spread, which is what tells two models apart at equal
  M; it does not correct the bias, shared by every model scored with that M.
  """
  fake = np.asarray(fake_MxD, np.float64)
  mu_r, s_r = _gaussian(real_NxD)
  with threadpoolctl.threadpool_limits(1, user_api='blas'):
    root_r = _sqrtm_psd(s_r)
    estimate = _frechet(*_gaussian(fake), mu_r, s_r, root_r)
    stats_R = _resampled(lambda idx: _frechet(*_gaussian(fake[idx]), mu_r, s_r, root_r),
                         len(fake), reps, seed)
  return _percentiles(stats_R - (stats_R.mean() - estimate), level)


def laplacian_variance(images_NxHxWxC, value_range, chunk=1024):
  """Per image, the variance of its 4-neighbour Laplacian (each channel on its
  own, interior pixels only), after scaling value_range = (lo, hi) to [0, 1]:
  blur removes the high frequencies the Laplacian keeps, so it lowers this.
  `chunk` images at a time, so that the float copies stay small."""
  images, (lo, hi) = np.asarray(images_NxHxWxC), value_range
  out_N = np.empty(len(images))
  for start in range(0, len(images), chunk):
    x = (images[start:start + chunk].astype(np.float32) - lo) / (hi - lo)
    lap = (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:]
           - 4 * x[:, 1:-1, 1:-1])
    out_N[start:start + len(x)] = lap.reshape(len(x), -1).var(1, dtype=np.float64)
  return out_N


def sharpness(images_NxHxWxC, value_range):
  """Mean over images of laplacian_variance; a family's over the real data's
  says how much sharper (> 1) or blurrier (< 1) its samples are."""
  return float(laplacian_variance(images_NxHxWxC, value_range).mean())


def split_images(data, split):
  """Every real image of `split` (this host's share), unpadded."""
  images = [b['image'][b['mask']] for b in data.eval_batches(split)]
  return np.concatenate(images)


class Evaluator:

  def __init__(self, name, cfg, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    info = ctx.data.info
    if info.modality != 'image' or not info.num_classes:
      raise ValueError(f'evals.{name}: sample quality needs a labelled image dataset (for its '
                       f'classifier); {info.name!r} is not one')
    self.settings = {k: cfg[k] for k in classifier.DEFAULTS if k in cfg}
    self._real = None

  def run(self, step, rstate, host_state, final):
    del rstate, final
    if jax.process_index() != 0:
      return {}
    clf = classifier.load(self.ctx.data_config.name, self.ctx.data_config.data_dir, **self.settings)
    if self._real is None:
      self._real = clf.features(split_images(self.ctx.data, self.cfg.get('split', 'train')))
    rng = self.ctx.key(self.name, step)
    fake = clf.features(self.ctx.family.sample(host_state(), rng, self.cfg.num_samples)['image'])
    precision, recall = knn_precision_recall(self._real, fake, self.cfg.get('k', 3))
    return {'fd': frechet_distance(fake, self._real), 'precision': precision, 'recall': recall,
            'classifier_test_accuracy': clf.test_accuracy}
