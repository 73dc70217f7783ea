"""Data parallelism: the one place that maps per-device steps over devices,
and that joins the hosts of a multi-host run.

Everything else sees a per-device function and a leading device axis. Moving
to `jax.shard_map` later means changing the wrappers in this file only.
"""
import functools

import jax
import numpy as np

from genjax.errors import ConfigError
from genjax.families.base import DATA_AXIS


def initialize_hosts(coordinator='', num_processes=0, process_id=-1):
  """Joins this process to a multi-host run; call it before any other JAX call.

  With no arguments, `jax.distributed.initialize()` detects the cluster (a TPU
  VM pod slice, SLURM, Open MPI). Elsewhere give all three: the coordinator is
  process 0's `host:port`, reachable from every host. Each process then sees
  every device in `jax.devices()`, its own in `jax.local_devices()`, and the
  pmapped steps reduce over all of them.
  """
  given = (bool(coordinator), num_processes > 0, process_id >= 0)
  if any(given) and not all(given):
    raise ConfigError('--coordinator, --num_processes and --process_id go together (e.g. '
                      '--coordinator=10.0.0.1:8476 --num_processes=2 --process_id=0); give none '
                      'of them where jax.distributed.initialize() detects the cluster (TPU, SLURM)')
  if all(given) and not 0 <= process_id < num_processes:
    raise ConfigError(f'--process_id={process_id} must be in [0, --num_processes={num_processes})')
  # Processes on CPUs reduce over gloo; older jax releases default to no CPU collectives.
  if getattr(jax.config, 'jax_cpu_collectives_implementation', 'gloo') in (None, 'none'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if all(given):
    jax.distributed.initialize(coordinator, num_processes, process_id)
  else:
    jax.distributed.initialize()


def pmap_train_step(step_fn, devices=None):
  """(state, batch, rng) -> (state, metrics), replicated over `devices`.

  `rng` is one key for the step, shared by all devices; the family derives
  per-example or per-device keys from it (`families.base.example_keys`,
  `device_key`). The incoming state buffers are donated.
  """
  return jax.pmap(step_fn, axis_name=DATA_AXIS, in_axes=(0, 0, None),
                  donate_argnums=(0,), devices=devices)


def pmap_train_steps(step_fn, devices=None):
  """(state, batches, key, steps) -> (state, metrics): several train steps in one
  device call, for models whose step is short next to a dispatch.

  `batches` stacks one batch per step behind the device axis (devices, steps,
  per-device batch, ...); step i runs on batches[:, i] with the key
  `fold_in(key, steps[i])`, the key pmap_train_step's caller gives that step
  (genjax.train's stream('train', step)), so the state equals that of
  len(steps) single calls. Metrics come back with a steps axis after the
  device axis.
  """
  def per_device(state, batches, key, steps):
    def one(state, xs):
      batch, step = xs
      return step_fn(state, batch, jax.random.fold_in(key, step))

    return jax.lax.scan(one, state, (batches, steps))

  return jax.pmap(per_device, axis_name=DATA_AXIS, in_axes=(0, 0, None, None),
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
  """First local device's copy, fetched to host numpy.

  Read from that device's buffer: indexing (`x[0]`) would be a computation
  over the local devices, which on several CPU processes can meet the
  collectives of steps still in flight in another order than on other hosts.
  """
  def first(x):
    if not isinstance(x, jax.Array):
      return np.asarray(x[0])
    shard = min(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.asarray(shard.data).reshape(x.shape[1:])

  return jax.tree_util.tree_map(first, tree)


def shard(batch, num_devices=None):
  """Splits the leading (host batch) axis into (devices, per-device batch)."""
  n = num_devices or jax.local_device_count()

  def split(x):
    if x.shape[0] % n:
      raise ValueError(f'host batch of {x.shape[0]} does not split over {n} devices; '
                       f'make data.batch_size a multiple of the device count')
    return np.asarray(x).reshape((n, x.shape[0] // n) + x.shape[1:])

  return jax.tree_util.tree_map(split, batch)


def shard_steps(batches, num_devices=None):
  """Host batches of consecutive steps -> (devices, steps, per-device batch, ...),
  as pmap_train_steps takes them."""
  sharded = [shard(b, num_devices) for b in batches]
  return jax.tree_util.tree_map(lambda *xs: np.stack(xs, axis=1), *sharded)
