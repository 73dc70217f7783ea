"""Runs before jax is imported: 4 fake CPU devices, and a private TFDS dir."""
import os
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('TFDS_DATA_DIR', os.path.join(tempfile.gettempdir(), 'genjax_test_tfds'))

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


def tiny_ar_config(variant='digits'):
  """The experiment's config, shrunk so a step compiles and runs in a moment."""
  from experiments import autoregressive  # pylint: disable=g-import-not-at-top
  c = autoregressive.get_config(variant)
  c.model.num_layers = 1
  c.model.width = 32
  c.model.num_heads = 2
  c.data.batch_size = 16
  c.data.eval_batch_size = 64
  c.data.seq_len = 16
  c.train.num_steps = 6
  c.train.log_every = 2
  c.train.eval_every = 0
  c.train.eval_batches = 2
  c.train.checkpoint_every = 3
  c.train.progress_bar = False
  c.optim.warmup_steps = 2
  c.model.dropout = 0.0
  c.sample.num_samples = 4
  c.sample.length = 20
  return c


@pytest.fixture
def tiny_config():
  return tiny_ar_config
