"""The comparison's reference sets, and every family's samples measured
against them under one protocol.

Images: N reference images from the train split and N held-out images (the
splits the models never trained on), N = min(num_samples, both sizes); each
family brings N samples, so every k-NN manifold is built from N points. The
`data` row measures the held-out images against the reference exactly as the
samples are measured: the floor for FD and the ceiling for precision and
recall at this N. Points: the mode protocol over N samples (and N held-out
points for the data row). Text: N held-out windows.

Every metric comes with a 95% bootstrap interval over the samples
(`<metric>_lo`, `<metric>_hi`); the resampling is seeded, so a run's
intervals are the same on every run.
"""
import numpy as np

from genjax.evals import classifier, modes, quality, text

_SEED = 0


def _subset(n_total, n, salt):
  """n indices of n_total, the same on every run."""
  return np.sort(np.random.default_rng([_SEED, salt]).permutation(n_total)[:n])


def _with_interval(out, key, value, lo_hi):
  out[key], out[f'{key}_lo'], out[f'{key}_hi'] = float(value), float(lo_hi[0]), float(lo_hi[1])


def _mean(out, key, values_N, reps, salt):
  values = np.asarray(values_N, np.float64)
  _with_interval(out, key, values.mean(),
                 quality.bootstrap(lambda idx: values[idx].mean(), len(values), reps, seed=salt))


def _held_out_splits(info, train_split):
  return [s for s in sorted(info.num_examples) if s != train_split]


class Reference:
  """Built once per comparison from one experiment's dataset.

  `measure(samples, scorer=None)` -> {metric: value, metric_lo, metric_hi};
  `data_row(scorer=None)` the same for held-out real data; `num` the sample
  count every family draws (0: the dataset offers no sample metrics)."""

  def __init__(self, data, config, num_samples, reps, classifier_settings=None):
    self.info, self.reps = data.info, reps
    self.kind, self.num = None, 0
    meta = data.info.metadata or {}
    train_split = config.data.train_split
    if data.info.modality == 'image' and data.info.num_classes:
      train = quality.split_images(data, train_split)
      held = np.concatenate([quality.split_images(data, s)
                             for s in _held_out_splits(data.info, train_split)])
      self.num = min(num_samples, len(train), len(held))
      self.clf = classifier.load(config.data.name, config.data.data_dir,
                                 **(classifier_settings or {}))
      self.reference = self.clf.features(train[_subset(len(train), self.num, 1)])
      self.held = held[_subset(len(held), self.num, 2)]
      self.data_sharpness = quality.sharpness(self.held, data.info.value_range)
      self.kind = 'image'
    elif data.info.modality == 'points' and 'centers' in meta:
      self.centers, self.std = np.asarray(meta['centers']), float(meta['std'])
      held = np.concatenate([b['x'][b['mask']] for s in _held_out_splits(data.info, train_split)
                             for b in data.eval_batches(s)])
      self.num = min(num_samples, len(held))
      self.held = held[_subset(len(held), self.num, 2)]
      self.kind = 'points'
    elif data.info.modality == 'text':
      windows = np.concatenate([b['tokens'][b['mask']] for b in data.eval_batches()])
      self.num = min(num_samples, len(windows))
      self.held = windows[_subset(len(windows), self.num, 2)]
      self.kind = 'text'

  def measure(self, samples, scorer=None):
    if self.kind == 'image':
      return self._images(samples['image'])
    if self.kind == 'points':
      return self._points(samples['x'])
    if self.kind == 'text':
      return self._text(samples['tokens'], scorer)
    return {}

  def data_row(self, scorer=None):
    if self.kind is None:
      return None
    key = {'image': 'image', 'points': 'x', 'text': 'tokens'}[self.kind]
    return self.measure({key: self.held}, scorer)

  def _images(self, images):
    out = {}
    fake = self.clf.features(images)
    _with_interval(out, 'fd', quality.frechet_distance(fake, self.reference),
                   quality.frechet_interval(fake, self.reference, self.reps, seed=_SEED))
    in_real, in_fake = quality.knn_indicators(self.reference, fake)
    _mean(out, 'precision', in_real, self.reps, 3)
    _mean(out, 'recall', in_fake, self.reps, 4)
    predicted = self.clf.predict(images).argmax(-1)
    K = self.info.num_classes

    def entropy(idx):
      p = np.bincount(predicted[idx], minlength=K) / len(idx)
      return float(-np.sum(p[p > 0] * np.log(p[p > 0])))

    _with_interval(out, 'entropy', entropy(np.arange(len(predicted))),
                   quality.bootstrap(entropy, len(predicted), self.reps, seed=5, recenter=True))
    sharp = quality.laplacian_variance(images, self.info.value_range) / self.data_sharpness
    _mean(out, 'sharpness', sharp, self.reps, 6)
    return out

  def _points(self, x):
    x = np.asarray(x)
    stats, out = modes.mode_stats(x, self.centers, self.std), {}
    for i, k in enumerate(('modes', 'high_quality', 'kl_uniform')):
      _with_interval(out, k, stats[k], quality.bootstrap(
          lambda idx, k=k: modes.mode_stats(x[idx], self.centers, self.std)[k], len(x),
          self.reps, seed=7 + i, recenter=True))
    return out

  def _text(self, tokens, scorer):
    out = {}
    _mean(out, 'parses', text.parse_flags(tokens), self.reps, 10)
    if scorer is not None:
      _mean(out, 'scored_nll', text.nll_per_byte(scorer.family, scorer.state, tokens), self.reps,
            11)
    return out
