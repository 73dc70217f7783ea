"""Bad config values are refused before any compute, naming the field and what
is allowed; every shipped config passes."""
import importlib
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from genjax import config_check, families
from genjax.data.pipeline import DatasetInfo
from genjax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = tuple(families.REGISTRY)


def config(name='autoregressive:digits'):
  module, variant = name.split(':')
  return importlib.import_module(f'genjax.experiments.{module}').get_config(variant)


@pytest.mark.parametrize('family', FAMILIES)
def test_every_shipped_config_passes(family):
  module = importlib.import_module(f'genjax.experiments.{family}')
  for variant in module.VARIANTS:
    for suffix in ('', ',smoke'):
      assert config_check.problems(module.get_config(variant + suffix)) == [], variant + suffix


@pytest.mark.parametrize('name, field, value, says', [
    ('autoregressive:digits', 'data.batch_size', 0, 'data.batch_size=0: must be a positive integer'),
    ('autoregressive:digits', 'model.width', -8, 'model.width=-8: must be a positive'),
    ('autoregressive:digits', 'model.width', 130, 'not divisible by model.num_heads=4'),
    ('autoregressive:pysrc', 'sample.top_p', 1.5, 'sample.top_p=1.5: must be in (0, 1]'),
    ('autoregressive:pysrc', 'sample.top_p', 0.0, 'sample.top_p=0.0: must be in (0, 1]'),
    ('autoregressive:pysrc', 'sample.temperature', -1.0, 'sample.temperature=-1.0: must be >= 0'),
    ('autoregressive:pysrc', 'sample.top_k', -3, 'sample.top_k=-3: must be >= 0'),
    ('diffusion:digits', 'sample.guidance', -1.0, 'sample.guidance=-1.0: must be >= 0'),
    ('diffusion:digits', 'sample.ddim_steps', 2000, 'at most model.num_steps (T = 1000)'),
    ('vae:digits', 'model.latent_dim', 0, 'model.latent_dim=0'),
    ('gan:digits', 'gan.n_critic', 0, 'gan.n_critic=0'),
    ('flow:digits', 'train.num_steps', -5, 'train.num_steps=-5'),
    ('masked_diffusion:pysrc', 'model.block_size', 5, 'model.block_size=5: must divide '
                                                     'data.seq_len=64 (0 = one block)'),
    ('masked_diffusion:pysrc', 'model.block_size', -4, 'model.block_size=-4: must be >= 0'),
    ('gan:digits', 'model.dtype', 'bf16', "model.dtype='bf16': 'float32' or 'bfloat16'"),
])
def test_a_bad_value_is_named_with_what_is_allowed(name, field, value, says):
  c = config(name)
  node, leaf = c, field.split('.')
  for key in leaf[:-1]:
    node = node[key]
  node[leaf[-1]] = value
  with pytest.raises(ConfigError, match='bad config: .*' + re_escape(says)):
    config_check.check(c)


def re_escape(text):
  import re  # pylint: disable=g-import-not-at-top
  return re.escape(text)


@settings(max_examples=200, deadline=None)
@given(temperature=st.floats(-2, 3), top_k=st.integers(-5, 300), top_p=st.floats(-0.5, 1.5),
       guidance=st.floats(-3, 8), ddim_steps=st.integers(-5, 1500))
def test_sampler_options_are_refused_exactly_when_out_of_range(temperature, top_k, top_p,
                                                               guidance, ddim_steps):
  ar, diff = config('autoregressive:pysrc'), config('diffusion:digits')
  ar.sample.temperature, ar.sample.top_k, ar.sample.top_p = temperature, top_k, top_p
  diff.sample.guidance, diff.sample.ddim_steps = guidance, ddim_steps
  ar_ok = temperature >= 0 and top_k >= 0 and 0 < top_p <= 1
  diff_ok = guidance >= 0 and 0 < ddim_steps <= diff.model.num_steps
  assert (config_check.problems(ar) == []) == ar_ok
  assert (config_check.problems(diff) == []) == diff_ok


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(['data.batch_size', 'data.eval_batch_size', 'train.num_steps',
                              'model.width', 'model.num_layers', 'model.num_heads']),
       value=st.integers(-1000, 1000))
def test_sizes_are_refused_exactly_when_not_positive(field, value):
  c = config('autoregressive:digits')
  section, key = field.split('.')
  c[section][key] = value
  c.model.width = 128 if field != 'model.width' else c.model.width
  c.model.num_heads = 4 if field != 'model.num_heads' else c.model.num_heads
  bad = value <= 0 or (field == 'model.width' and value % 4) or (
      field == 'model.num_heads' and 128 % value)
  assert bool(config_check.problems(c)) == bool(bad)


# The shapes of the datasets the shipped configs name (digits here; the rest as
# TFDS describes them), so the check runs without preparing them.
SHAPES = {'digits': ('image', (8, 8, 1)), 'mnist': ('image', (28, 28, 1)),
          'fashion_mnist': ('image', (28, 28, 1)), 'cifar10': ('image', (32, 32, 3)),
          'pysrc': ('text', (65,)), 'tiny_shakespeare': ('text', (65,))}


def info(name, modality=None, shape=None):
  modality, shape = (modality, shape) if modality else SHAPES.get(name, ('points', (2,)))
  return DatasetInfo(name, modality, shape, 17, 10, {})


@pytest.mark.parametrize('family', FAMILIES)
def test_every_shipped_config_fits_its_dataset(family):
  module = importlib.import_module(f'genjax.experiments.{family}')
  for variant in module.VARIANTS:
    for suffix in ('', ',smoke'):
      c = module.get_config(variant + suffix)
      for devices in (1, 4):
        assert config_check.data_problems(c, info(c.data.name), devices) == [], (variant, devices)


@pytest.mark.parametrize('name, overrides, data, says', [
    ('flow:digits', {}, info('pysrc'), "data.name='pysrc' holds text; the flow family models "
                                       'image or points'),
    ('masked_diffusion:pysrc', {}, info('digits'), 'the masked_diffusion family models text'),
    ('autoregressive:digits', {}, info('toy2d/ring8'), 'autoregressive family models text or image'),
    ('diffusion:digits', {'model.channel_mult': (1, 2, 2, 2)}, info('x', 'image', (12, 12, 1)),
     "halves the image 3 times, so its sides must be multiples of 8; 'x' images are 12x12"),
    ('diffusion:digits', {'model.net': 'dit', 'model.patch': 3}, info('digits'),
     'model.patch=3 must divide the image sides'),
    ('flow:digits', {'model.levels': 4}, info('digits'), 'sides must be multiples of 16'),
    ('gan:digits', {'gan.n_critic': 3}, info('digits'),
     'data.batch_size=64 over 1 device(s) is 64 per device, which must be a multiple of '
     'gan.n_critic * model.pack = 3'),
    ('gan:digits', {'gan.n_critic': 8, 'train.microbatches': 16}, info('digits'),
     'is 64 per device, which must be a multiple of gan.n_critic * model.pack * '
     'train.microbatches = 128'),
    ('vae:digits', {'train.microbatches': 3}, info('digits'),
     'train.microbatches=3 must divide the per-device batch of 64 (data.batch_size=64 over 1 '
     'device(s))'),
])
def test_a_config_that_does_not_fit_its_data_is_named(name, overrides, data, says):
  c = config(name)
  for field, value in overrides.items():
    section, key = field.split('.')
    c[section][key] = value
  with pytest.raises(ConfigError, match='bad config for this dataset: .*' + re_escape(says)):
    config_check.check_data(c, data)


def _launch(*args):
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)


def test_launch_refuses_bad_input_in_one_line(tmp_path):
  out = _launch('--config=experiments/autoregressive.py:digits,smoke', f'--workdir={tmp_path}',
                '--mode=sample', '--config.sample.top_p=1.5', '--config.sample.temperature=-1')
  assert out.returncode != 0 and 'Traceback' not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      'genjax: bad config: sample.temperature=-1.0: must be >= 0 (0 = greedy); '
      'sample.top_p=1.5: must be in (0, 1] (1 = off)')
  out = _launch('--config=experiments/autoregressive.py:digits,smoke', f'--workdir={tmp_path}',
                '--config.trian.num_steps=5')
  assert out.returncode != 0 and 'Traceback' not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      'genjax: the config has no field \'trian\'; Did you mean "train" instead of "trian"?')
  assert not os.listdir(tmp_path)  # nothing was written: refused before any work
