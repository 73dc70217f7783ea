"""Sample quality and diversity of images in the feature space of the shared
classifier (`genjax.evals.classifier`, trained on the same dataset):

  fd          Fréchet distance between Gaussians fitted to the features of the
              samples and of a real split (FID's formula, a small in-domain net
              instead of Inception);
  precision   share of samples inside the real data's k-NN manifold, and
  recall      share of real examples inside the samples' k-NN manifold
              (Kynkäänniemi et al. 2019, k = 3).

cfg: num_samples (1,000), split (the real reference, default 'train'),
k (3), optional classifier settings as in genjax.evals.classifier.
"""
import zlib

import jax
import numpy as np

from genjax.evals import classifier


def frechet_distance(a_NxD, b_MxD):
  """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), in float64."""
  a, b = np.asarray(a_NxD, np.float64), np.asarray(b_MxD, np.float64)
  mu_a, mu_b = a.mean(0), b.mean(0)
  s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  # Tr (S_a S_b)^(1/2) = Tr (S_a^(1/2) S_b S_a^(1/2))^(1/2), a symmetric PSD matrix.
  w, v = np.linalg.eigh(s_a)
  root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
  return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)


def _pairwise(a_NxD, b_MxD):
  sq = (a_NxD ** 2).sum(1)[:, None] + (b_MxD ** 2).sum(1)[None] - 2 * a_NxD @ b_MxD.T
  return np.sqrt(np.clip(sq, 0, None))


def _radii(x_NxD, k):
  """Distance of each point to its k-th nearest other point."""
  d = _pairwise(x_NxD, x_NxD)
  return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def knn_precision_recall(real_NxD, fake_MxD, k=3):
  real, fake = np.asarray(real_NxD, np.float64), np.asarray(fake_MxD, np.float64)
  d_fake_real = _pairwise(fake, real)
  precision = np.mean((d_fake_real <= _radii(real, k)[None]).any(1))
  recall = np.mean((d_fake_real.T <= _radii(fake, k)[None]).any(1))
  return float(precision), float(recall)


def split_images(data, split):
  """Every real image of `split` (this host's share), unpadded."""
  images = [b['image'][b['mask']] for b in data.eval_batches(split)]
  return np.concatenate(images)


class Evaluator:

  def __init__(self, name, cfg, ex):
    self.name, self.cfg, self.ex = name, cfg, ex
    info = ex.data.info
    if info.modality != 'image' or not info.num_classes:
      raise ValueError(f'evals.{name}: sample quality needs a labelled image dataset (for its '
                       f'classifier); {info.name!r} is not one')
    self.settings = {k: cfg[k] for k in classifier.DEFAULTS if k in cfg}
    self._real = None

  def run(self, step, rstate, host_state, final):
    del rstate, final
    if jax.process_index() != 0:
      return {}
    clf = classifier.load(self.ex.config.data.name, self.ex.config.data.data_dir, **self.settings)
    if self._real is None:
      self._real = clf.features(split_images(self.ex.data, self.cfg.get('split', 'train')))
    rng = jax.random.fold_in(self.ex.stream('eval', zlib.crc32(self.name.encode())), step)
    fake = clf.features(self.ex.family.sample(host_state(), rng, self.cfg.num_samples)['image'])
    precision, recall = knn_precision_recall(self._real, fake, self.cfg.get('k', 3))
    return {'fd': frechet_distance(fake, self._real), 'precision': precision, 'recall': recall,
            'classifier_test_accuracy': clf.test_accuracy}
