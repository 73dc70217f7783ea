"""Runs before jax is imported: 4 fake CPU devices, deterministic GPU ops,
float32 matmuls at full precision, a private TFDS dir, and one persistent
compilation cache for the whole run (the xdist workers and the processes the
tests start share it): the suite compiles the same smoke models in many
tests, and a second compile of a program is a read from disk.

On a GPU the suite runs unchanged: multi-device tests take the CPU devices
explicitly, and comparisons run at the highest matmul precision (TF32 is the
GPU default) with deterministic reductions and scatter-adds.
"""
import os
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
if '--xla_gpu_deterministic_ops' not in os.environ['XLA_FLAGS']:
  os.environ['XLA_FLAGS'] += ' --xla_gpu_deterministic_ops=true'
os.environ.setdefault('TFDS_DATA_DIR', os.path.join(tempfile.gettempdir(), 'genjax_test_tfds'))
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'genjax_test_jax_cache'))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_default_matmul_precision', 'highest')


def pytest_xdist_auto_num_workers(config):
  """`-n auto`: a worker per core, at most 4 (each holds a JAX runtime and its compiles)."""
  del config
  return max(1, min(4, len(os.sched_getaffinity(0))))


def tiny_ar_config(variant='digits'):
  """The experiment's config, shrunk so a step compiles and runs in a moment."""
  from genjax.experiments import autoregressive  # pylint: disable=g-import-not-at-top
  c = autoregressive.get_config(variant + ',smoke')
  c.train.num_steps = 6
  c.train.checkpoint_every = 3
  return c


@pytest.fixture
def tiny_config():
  return tiny_ar_config


def cpu_devices(n):
  """n CPU devices, or a skip that says why (conftest asks XLA for 4)."""
  devices = jax.devices('cpu')
  if len(devices) < n:
    pytest.skip(f'needs {n} CPU devices, has {len(devices)}: set XLA_FLAGS='
                f'--xla_force_host_platform_device_count={n} before jax starts')
  return devices[:n]
