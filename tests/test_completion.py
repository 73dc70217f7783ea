"""Completion of the bottom half of digits (genjax.completion): the AR model's
prompting keeps what it is given, and its conditional NLL is the chain rule's; every
family's completion tool keeps the given pixels."""
import importlib

import jax
import numpy as np
import pytest

from genjax.experiments import autoregressive as ar_config
from genjax import completion, families
from genjax.data import Dataset


def _untrained_ar():
  """(data, family, state) of the AR digits smoke model at initialisation."""
  config = ar_config.get_config('digits,smoke')
  data = Dataset(config.data, seed=0)
  family = families.build(config, data.info)
  return data, family, family.init(jax.random.PRNGKey(0), data.train_batch(0))


def test_ar_completion_keeps_the_given_pixels_and_scores_the_rest_exactly():
  data, family, state = _untrained_ar()
  images = np.asarray(data.train_batch(1)['image'][:6])
  known = 32  # the top 4 rows of 8
  mask = np.zeros(images.shape, bool)
  mask[:, :4] = True
  out = family.tools['complete'](state, jax.random.PRNGKey(1), images, mask)
  assert out.shape == images.shape and out.dtype == images.dtype
  flat_in, flat_out = images.reshape(6, -1), out.reshape(6, -1)
  np.testing.assert_array_equal(flat_out[:, :known], flat_in[:, :known])
  assert np.all(flat_out < data.info.num_levels)
  assert not np.array_equal(flat_out[:, known:], flat_in[:, known:])  # it did draw the rest
  # NLL(bottom | top) + NLL(top) = NLL(image): the conditional is the chain rule's tail.
  whole = family.tools['conditional_nll'](state, images, np.zeros(images.shape, bool))
  top_and_bottom = family.tools['conditional_nll'](state, images, mask)
  head = whole - top_and_bottom
  assert np.all(head > 0) and np.all(top_and_bottom > 0)
  eval_sums = family.eval_step(state, {'image': images, 'mask': np.ones(6, bool)}, None)
  np.testing.assert_allclose(whole.sum(), float(eval_sums['nll']), rtol=1e-5)


def test_ar_completion_refuses_a_mask_that_is_not_a_raster_prefix():
  data, family, state = _untrained_ar()
  images = np.asarray(data.train_batch(1)['image'][:2])
  left_half = np.zeros(images.shape, bool)
  left_half[:, :, :4] = True
  ragged = np.zeros(images.shape, bool)
  ragged[0, :4] = True
  ragged[1, :3] = True
  for mask in (left_half, ragged):
    for call in (lambda m: family.tools['complete'](state, jax.random.PRNGKey(1), images, m),
                 lambda m: family.tools['conditional_nll'](state, images, m)):
      with pytest.raises(ValueError, match='raster order'):
        call(mask)


def test_completion_takes_every_image_family_that_offers_the_tool():
  from genjax.experiments import compare as compare_config  # pylint: disable=g-import-not-at-top
  names = list(completion.completers(compare_config.get_config('digits,smoke')))
  assert names == ['autoregressive', 'diffusion', 'flow', 'flow_matching', 'vae']  # the GAN has none


@pytest.mark.parametrize('name', ['diffusion', 'vae', 'flow', 'flow_matching'])
def test_complete_keeps_the_given_pixels_and_fills_the_rest_with_levels(name):
  """The common signature: complete(state, rng, images, known_mask) -> images."""
  config = importlib.import_module(f'genjax.experiments.{name}').get_config('digits,smoke')
  data = Dataset(config.data, seed=0)
  family = families.build(config, data.info)
  state = family.init(jax.random.PRNGKey(0), data.train_batch(0))
  images = np.asarray(data.train_batch(1)['image'][:4], np.float32)
  mask = np.zeros(images.shape, bool)
  mask[:, :, :3] = True  # the left 3 columns: any mask, not only a raster-order prefix
  out = family.tools['complete'](state, jax.random.PRNGKey(1), images, mask)
  assert out.shape == images.shape
  np.testing.assert_array_equal(out[mask], images[mask])
  levels = data.info.num_levels
  assert np.all(out == np.round(out)) and out.min() >= 0 and out.max() <= levels - 1
  assert not np.array_equal(out[~mask], images[~mask])


def test_the_test_digits_span_as_many_eval_batches_as_asked():
  class Data:  # 3 batches of 4, the last holding 3 real digits and a pad

    def eval_batches(self, split):
      assert split == 'test'
      for b in range(3):
        ids = np.arange(4 * b, 4 * b + 4)
        yield {'image': np.broadcast_to(ids[:, None, None, None], (4, 8, 8, 1)),
               'label': ids, 'mask': ids < 11}

  images, labels = completion._test_digits(Data(), 10)  # pylint: disable=protected-access
  np.testing.assert_array_equal(labels, np.arange(10))
  np.testing.assert_array_equal(images[:, 0, 0, 0], np.arange(10))
  assert images.dtype == np.float32
  with pytest.raises(ValueError, match='holds 11 digits'):
    completion._test_digits(Data(), 12)  # pylint: disable=protected-access
