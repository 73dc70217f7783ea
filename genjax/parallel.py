"""Data parallelism: the one place that maps per-device steps over devices.

Everything else sees a per-device function and a leading device axis. Moving
to `jax.shard_map` later means changing the wrappers in this file only.
"""
import functools

import jax
import numpy as np

from genjax.families.base import DATA_AXIS


def pmap_train_step(step_fn, devices=None):
  """(state, batch, rng) -> (state, metrics), replicated over `devices`.

  `rng` is one key for the step, shared by all devices; the family derives
  per-example or per-device keys from it (`families.base.example_keys`,
  `device_key`). The incoming state buffers are donated.
  """
  return jax.pmap(step_fn, axis_name=DATA_AXIS, in_axes=(0, 0, None),
                  donate_argnums=(0,), devices=devices)


def pmap_eval_step(eval_fn, devices=None):
  """(state, batch, rng) -> sums over all devices (identical on each).

  As in training, `rng` is one key shared by all devices.
  """
  def per_device(state, batch, rng):
    return jax.lax.psum(eval_fn(state, batch, rng), DATA_AXIS)

  return jax.pmap(per_device, axis_name=DATA_AXIS, in_axes=(0, 0, None), devices=devices)


def replicate(tree, devices=None):
  """A copy per device (default: every local device; or a list of devices, or
  the first n local ones), laid out exactly as a pmapped step lays out its
  outputs, so that the second step does not retrace for another input layout."""
  if devices is None or isinstance(devices, int):
    devices = jax.local_devices()[:devices or jax.local_device_count()]
  devices = tuple(devices)
  stacked = jax.tree_util.tree_map(
      lambda x: np.broadcast_to(np.asarray(x), (len(devices),) + np.shape(x)), tree)
  return _identity(devices)(stacked)


@functools.lru_cache(maxsize=None)
def _identity(devices):
  return jax.pmap(lambda x: x, axis_name=DATA_AXIS, devices=devices)


def unreplicate(tree):
  """First device's copy, fetched to host numpy."""
  return jax.device_get(jax.tree_util.tree_map(lambda x: x[0], tree))


def shard(batch, num_devices=None):
  """Splits the leading (host batch) axis into (devices, per-device batch)."""
  n = num_devices or jax.local_device_count()

  def split(x):
    if x.shape[0] % n:
      raise ValueError(f'host batch of {x.shape[0]} does not split over {n} devices; '
                       f'make data.batch_size a multiple of the device count')
    return np.asarray(x).reshape((n, x.shape[0] // n) + x.shape[1:])

  return jax.tree_util.tree_map(split, batch)
