"""A new family costs three things: its module, its registry line and its
experiment config. This test adds a toy family (independent categorical
pixels, exact likelihood) from exactly those three, written to a temporary
directory, and finds it checked by config_check, trained and measured by the
comparison, and listed for notebooks and completion, with none of those
files edited.
"""
import json
import sys
import textwrap

import numpy as np
import pytest

from genjax import config_check, families
from genjax.errors import ConfigError

MODULE = '''
"""Independent pixels: one categorical distribution per subpixel."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax.families import base

MODALITIES = ('image',)


def config_problems(config):
  s = config.model.smoothing
  return [] if 0 <= s < 1 else [f'model.smoothing={s!r}: must be in [0, 1)']


def nll(logits, images, num_levels):
  """(B,) nats of each image under the per-subpixel categoricals."""
  logp = jax.nn.log_softmax(logits)
  onehot = jax.nn.one_hot(images.astype(jnp.int32), num_levels)
  return -(onehot * logp).reshape(images.shape[0], -1).sum(-1)


def build(config, info):
  L, shape = info.num_levels, tuple(info.shape)
  tx = optax.adam(config.optim.lr)

  def init(rng, batch):
    params = {'logits': jnp.zeros(shape + (L,))}
    return base.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params))

  def train_step(state, batch, rng):
    loss_fn = lambda p: nll(p['logits'], batch['image'], L).mean()
    params, opt_state, metrics, _ = base.update(loss_fn, state.params, state.opt_state, tx)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def eval_step(state, batch, rng):
    mask = batch['mask'].astype(jnp.float32)
    per = nll(state.params['logits'], batch['image'], L)
    return dict(nll=(per * mask).sum(), dims=mask.sum() * np.prod(shape), examples=mask.sum())

  def sample(state, rng, num_samples, **unused):
    x = jax.random.categorical(rng, state.params['logits'], shape=(num_samples,) + shape)
    return {'image': np.asarray(x, np.int32)}

  def complete(state, rng, images, known_mask):
    return np.where(known_mask, images, sample(state, rng, len(images))['image'])

  return base.Family(name=config.family, init=init, train_step=train_step,
                     eval_step=eval_step, sample=sample, likelihood='exact',
                     tools={'network_evals': 1, 'complete': complete})
'''

CONFIG = '''
import ml_collections

from genjax.experiments import common

VARIANTS = ('digits',)


def get_config(arg='digits'):
  variant, smoke = common.parse(arg, VARIANTS, 'toy config')
  c = common.base('pixels', variant, batch_size=32, num_steps=40)
  c.model = ml_collections.ConfigDict(dict(smoothing=0.0))
  c.optim.lr = 0.1
  common.likelihood_evals(c, every=20)
  return common.smoke(c, {}) if smoke else c
'''


@pytest.fixture
def pixels(tmp_path, monkeypatch):
  """The toy family's three places: its module, its registry line, its config."""
  (tmp_path / 'toy_pixels.py').write_text(textwrap.dedent(MODULE))
  (tmp_path / 'toy_pixels_config.py').write_text(textwrap.dedent(CONFIG))
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setitem(families.REGISTRY, 'pixels', 'toy_pixels')
  import toy_pixels_config  # pylint: disable=g-import-not-at-top,import-error
  # As experiments/pixels.py would be: genjax.experiments.pixels.
  monkeypatch.setitem(sys.modules, 'genjax.experiments.pixels', toy_pixels_config)
  return toy_pixels_config


def test_config_check_runs_the_new_familys_own_check(pixels):
  config = pixels.get_config('digits,smoke')
  config_check.check(config)  # a good config passes
  config.model.smoothing = 1.5
  with pytest.raises(ConfigError) as e:
    config_check.check(config)
  message = str(e.value)
  assert 'model.smoothing=1.5: must be in [0, 1)' in message and '\n' not in message


def test_the_comparison_trains_and_measures_the_new_family(pixels, tmp_path):
  from genjax import compare  # pylint: disable=g-import-not-at-top
  from genjax.experiments import compare as compare_config  # pylint: disable=g-import-not-at-top
  c = compare_config.get_config('digits,smoke')
  assert 'pixels' in c.families and c.families.pixels.variant == 'digits'
  assert 'pixels' not in compare_config.get_config('pysrc,smoke').families  # images only
  c.only = 'pixels'
  c.cost.ddim_steps = ()
  compare.main(c, str(tmp_path / 'compare'))
  with open(tmp_path / 'compare' / 'report.json') as f:
    row = next(r for r in json.load(f)['runs'] if r['label'] == 'pixels')
  assert row['likelihood'] == 'exact' and row['steps'] == 4
  # Independent pixels, trained: finite bits/dim below the uniform model's log2(17).
  assert np.isfinite(row['bpd']) and 0 < row['bpd'] < np.log2(17)
  assert np.isfinite(row['fd'])


def test_notebooks_expect_the_new_family(pixels):
  from tests import test_notebooks  # pylint: disable=g-import-not-at-top
  assert 'pixels' in test_notebooks.expected_notebooks()


def test_completion_uses_the_new_familys_tool(pixels):
  from genjax import completion  # pylint: disable=g-import-not-at-top
  from genjax.experiments import compare as compare_config  # pylint: disable=g-import-not-at-top
  assert 'pixels' in completion.completers(compare_config.get_config('digits,smoke'))
