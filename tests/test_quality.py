"""Shared sample-quality metrics: Fréchet distance and k-NN precision/recall."""
import numpy as np
import pytest

from genjax.data import pipeline
from genjax.evals import classifier, quality


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
  rng = np.random.default_rng(0)
  a = rng.normal(0.0, 1.0, (200_000, 2))
  b = rng.normal([1.0, 0.0], [2.0, 0.5], (200_000, 2))
  # Commuting covariances: |mu|^2 + sum (s_a - s_b)^2 over the standard deviations.
  expected = 1.0 + (1 - 2) ** 2 + (1 - 0.5) ** 2
  assert quality.frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
  assert quality.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_precision_recall_on_hand_made_sets():
  rng = np.random.default_rng(1)
  real = rng.normal(size=(500, 2))
  assert quality.knn_precision_recall(real, rng.normal(size=(500, 2))) > (0.9, 0.9)
  far = rng.normal(size=(500, 2)) + 100.0
  assert quality.knn_precision_recall(real, far) == (0.0, 0.0)
  one_point = np.repeat(real[:1], 500, 0)  # inside the data, but no diversity
  precision, recall = quality.knn_precision_recall(real, one_point)
  assert precision == 1.0 and recall <= 1 / 500


@pytest.fixture(scope='module')
def digits():
  builder = pipeline.get_builder('digits', '')
  splits = {s: classifier._read_split(builder, s)[0] for s in ('train', 'test')}  # pylint: disable=protected-access
  return classifier.load('digits'), splits


def test_digits_features_tell_real_from_noise(digits):
  clf, splits = digits
  assert clf.test_accuracy > 0.9
  train, test = clf.features(splits['train']), clf.features(splits['test'])
  noise = clf.features(np.random.default_rng(2).integers(0, 17, splits['test'].shape))
  fd_real, fd_noise = quality.frechet_distance(test, train), quality.frechet_distance(noise, train)
  assert fd_noise > 10 * fd_real, (fd_real, fd_noise)
  # Equal set sizes (the k-NN radii shrink as a set grows); k = 3 as in the paper.
  precision, recall = quality.knn_precision_recall(train[:len(test)], test)
  assert precision > 0.75 and recall > 0.75, (precision, recall)
  repeated = clf.features(np.repeat(splits['test'][:1], len(splits['test']), 0))
  assert quality.knn_precision_recall(train, repeated)[1] < 0.02
