"""Completion of the bottom half of digits (genjax.completion): the AR model's
prompting keeps what it is given, and its conditional NLL is the chain rule's."""
import jax
import numpy as np

from genjax.experiments import autoregressive as ar_config
from genjax import families
from genjax.data import Dataset


def test_ar_completion_keeps_the_given_pixels_and_scores_the_rest_exactly():
  config = ar_config.get_config('digits,smoke')
  data = Dataset(config.data, seed=0)
  family = families.build(config, data.info)
  state = family.init(jax.random.PRNGKey(0), data.train_batch(0))
  images = np.asarray(data.train_batch(1)['image'][:6])
  known = 32  # the top 4 rows of 8
  out = family.tools['complete'](state, jax.random.PRNGKey(1), images, known)
  assert out.shape == images.shape and out.dtype == images.dtype
  flat_in, flat_out = images.reshape(6, -1), out.reshape(6, -1)
  np.testing.assert_array_equal(flat_out[:, :known], flat_in[:, :known])
  assert np.all(flat_out < data.info.num_levels)
  assert not np.array_equal(flat_out[:, known:], flat_in[:, known:])  # it did draw the rest
  # NLL(bottom | top) + NLL(top) = NLL(image): the conditional is the chain rule's tail.
  whole = family.tools['conditional_nll'](state, images, 0)
  top_and_bottom = family.tools['conditional_nll'](state, images, known)
  head = whole - top_and_bottom
  assert np.all(head > 0) and np.all(top_and_bottom > 0)
  eval_sums = family.eval_step(state, {'image': images, 'mask': np.ones(6, bool)}, None)
  np.testing.assert_allclose(whole.sum(), float(eval_sums['nll']), rtol=1e-5)
