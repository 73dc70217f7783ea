"""genjax.parallel's wrappers as they were on `jax.pmap`, kept here only so
that bench/families.py --against_pmap can time today's mesh wrappers against
them in the same process. Not used by the library.

The layout differs: state and metrics carry a leading device axis, and a
batch is reshaped to (devices, per-device batch, ...).
"""
import functools

import jax
import numpy as np

from genjax.families.base import DATA_AXIS


def train_step(step_fn):
  return jax.pmap(step_fn, axis_name=DATA_AXIS, in_axes=(0, 0, None), donate_argnums=(0,))


def train_steps(step_fn):
  def per_device(state, batches, key, steps):
    def one(state, xs):
      batch, step = xs
      return step_fn(state, batch, jax.random.fold_in(key, step))

    return jax.lax.scan(one, state, (batches, steps))

  return jax.pmap(per_device, axis_name=DATA_AXIS, in_axes=(0, 0, None, None),
                  donate_argnums=(0,))


def replicate(tree):
  devices = tuple(jax.local_devices())
  stacked = jax.tree_util.tree_map(
      lambda x: np.broadcast_to(np.asarray(x), (len(devices),) + np.shape(x)), tree)
  return _identity(devices)(stacked)


@functools.lru_cache(maxsize=None)
def _identity(devices):
  return jax.pmap(lambda x: x, axis_name=DATA_AXIS, devices=devices)


def shard(batch):
  n = jax.local_device_count()
  return jax.tree_util.tree_map(
      lambda x: np.asarray(x).reshape((n, x.shape[0] // n) + x.shape[1:]), batch)


def shard_steps(batches):
  return jax.tree_util.tree_map(lambda *xs: np.stack(xs, axis=1), *[shard(b) for b in batches])
