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


def _brute_force(real, fake, k):
  """The full-matrix float64 computation the chunked one must reproduce."""
  def pairwise(a, b):
    sq = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.clip(sq, 0, None))
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  r_real = np.sort(pairwise(real, real), 1)[:, k]  # column 0 is the point itself
  r_fake = np.sort(pairwise(fake, fake), 1)[:, k]
  d = pairwise(fake, real)
  return r_real, r_fake, (d <= r_real[None]).any(1), (d.T <= r_fake[None]).any(1)


def _sets(kind):
  rng = np.random.default_rng(3)
  if kind == 'gaussian':
    return rng.normal(size=(203, 5)).astype(np.float32), rng.normal(0.3, 1.2, (157, 5))
  # Small integers: every squared distance is exact, so ties and duplicates are
  # real ties, which the brute force and the blocks must break the same way.
  real = rng.integers(-3, 4, (180, 3)).astype(np.float64)
  real[90:120] = real[:30]  # duplicates of other real points
  fake = np.concatenate([real[:40], real[:10], rng.integers(-5, 6, (100, 3))])  # some on them
  return real, fake


@pytest.mark.parametrize('kind', ['gaussian', 'integer_grid'])
@pytest.mark.parametrize('chunk', [None, 1, 7, 64, 1000])
def test_chunked_knn_equals_the_brute_force(kind, chunk):
  real, fake = _sets(kind)
  for k in (1, 2, 3):
    r_real, r_fake, in_real, in_fake = _brute_force(real, fake, k)
    np.testing.assert_allclose(quality.knn_radii(real, k, chunk), r_real, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(quality.knn_radii(fake, k, chunk), r_fake, rtol=1e-12, atol=1e-12)
    got_real, got_fake = quality.knn_indicators(real, fake, k, chunk)
    np.testing.assert_array_equal(got_real, in_real)
    np.testing.assert_array_equal(got_fake, in_fake)


def test_a_duplicate_is_a_neighbour_at_distance_zero():
  x = np.array([[0.0], [0.0], [1.0], [3.0]])
  # Point 0's neighbours: its duplicate (0), then 1, then 3; the point itself is not one.
  np.testing.assert_array_equal(quality.knn_radii(x, 1), [0, 0, 1, 2])
  np.testing.assert_array_equal(quality.knn_radii(x, 2), [1, 1, 1, 3])
  with pytest.raises(ValueError, match='k=4'):
    quality.knn_radii(x, 4)


def test_knn_is_deterministic():
  real, fake = _sets('gaussian')
  a, b = quality.knn_indicators(real, fake, 3, 16), quality.knn_indicators(real, fake, 3, 16)
  assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
  assert quality.knn_radii(real, 3).tobytes() == quality.knn_radii(real, 3).tobytes()


def test_bootstrap_interval_of_a_mean_covers_it_and_repeats():
  rng = np.random.default_rng(4)
  coin = rng.random(2000) < 0.3  # a share near 0.3: the 95% interval is about +-0.02
  lo, hi = quality.mean_interval(coin, reps=300, seed=1)
  assert lo < 0.3 < hi and 0.01 < (hi - lo) / 2 < 0.04, (lo, hi)
  assert quality.mean_interval(coin, reps=300, seed=1) == (lo, hi)
  assert quality.mean_interval(coin, reps=300, seed=2) != (lo, hi)
  values = rng.normal(size=500)
  assert quality.bootstrap(lambda idx: values[idx].mean(), 500, seed=5) == quality.mean_interval(
      values, seed=5)


def test_frechet_interval_contains_the_estimate():
  rng = np.random.default_rng(5)
  real = rng.normal(size=(3000, 32))
  # 300 samples in 32 dimensions: the resamples' FD lies well above the
  # estimate (the bias of fewer distinct points), and the interval must not.
  for fake in (rng.normal(0.2, 1.1, (1000, 32)), rng.normal(size=(300, 32))):
    lo, hi = quality.frechet_interval(fake, real, reps=100, seed=0)
    assert lo < quality.frechet_distance(fake, real) < hi, (lo, hi)
    assert quality.frechet_interval(fake, real, reps=100, seed=0) == (lo, hi)


def test_sharpness_falls_with_blur_and_is_zero_on_a_constant_image():
  rng = np.random.default_rng(6)
  images = rng.integers(0, 256, (20, 16, 16, 3)).astype(np.uint8)
  pad = np.pad(images.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)), mode='edge')
  blurred = sum(pad[:, i:i + 16, j:j + 16] for i in range(3) for j in range(3)) / 9  # 3x3 box
  per_image = quality.laplacian_variance(images, (0, 255))
  assert per_image.shape == (20,)
  np.testing.assert_array_equal(quality.laplacian_variance(images, (0, 255), chunk=3), per_image)
  assert (quality.laplacian_variance(blurred, (0, 255)) < per_image).all()
  assert quality.sharpness(blurred, (0, 255)) < quality.sharpness(images, (0, 255)) / 5
  # The scale is the value range's: the same images in [0, 1] score the same.
  in_unit = quality.sharpness(images / 255, (0, 1))
  assert in_unit == pytest.approx(quality.sharpness(images, (0, 255)))
  assert quality.sharpness(np.full((2, 8, 8, 1), 7, np.uint8), (0, 16)) == 0.0
