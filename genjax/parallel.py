"""Data parallelism: the one place that maps per-device steps over devices,
and that joins the hosts of a multi-host run.

A step is `jax.jit` of `jax.shard_map` over a one-axis `Mesh` (axis
`DATA_AXIS`): the family's per-device function sees its share of the batch
and averages over DATA_AXIS itself. Outside a step, state and metrics are
global `jax.Array`s replicated over the mesh, and a batch is one global array
split along its first axis, each host holding its own examples. Callers hand
host values (numpy, or arrays on any device) to the wrappers below, which
place them; `replicate` and `shard` place them ahead of time.

`devices` everywhere: None for every device of every host, an int n for the
first n local devices, or a list of devices.
"""
import functools

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from genjax.errors import ConfigError
from genjax.families.base import DATA_AXIS


def initialize_hosts(coordinator='', num_processes=0, process_id=-1):
  """Joins this process to a multi-host run; call it before any other JAX call.

  With no arguments, `jax.distributed.initialize()` detects the cluster (a TPU
  VM pod slice, SLURM, Open MPI). Elsewhere give all three: the coordinator is
  process 0's `host:port`, reachable from every host. Each process then sees
  every device in `jax.devices()`, its own in `jax.local_devices()`, and the
  steps reduce over all of them.
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


def mesh(devices=None):
  """The one-axis mesh (DATA_AXIS) over `devices`."""
  if devices is None:
    devices = jax.devices()
  elif isinstance(devices, int):
    devices = jax.local_devices()[:devices]
  return _mesh(tuple(devices))


@functools.lru_cache(maxsize=None)
def _mesh(devices):
  return Mesh(np.array(devices), (DATA_AXIS,))


def _place(tree, sharding):
  """Host values -> global arrays with `sharding`; arrays already so placed pass."""
  one_host = jax.process_count() == 1

  def put(x):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    # Through the host, so every device gets a buffer of its own: a state may
    # hold one array twice (an EMA initialised to the parameters), and its
    # buffers get donated. (device_put with may_alias=False still shared the
    # first device's buffer over several CPU devices, and the step crashed.)
    x = np.asarray(x)
    if one_host:
      return jax.device_put(x, sharding)
    if sharding.is_fully_replicated:  # every host holds the whole value
      return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree_util.tree_map(put, tree)


def replicate(tree, devices=None):
  """A copy on every device of the mesh: what a step takes and gives back as
  state. In a multi-host run every host passes the same value."""
  return _place(tree, NamedSharding(mesh(devices), P()))


def _check_split(batch, m, axis):
  n = m.devices.size // jax.process_count()
  for x in jax.tree_util.tree_leaves(batch):
    if np.shape(x)[axis] % n:
      raise ValueError(f'host batch of {np.shape(x)[axis]} does not split over {n} devices; '
                       f'make data.batch_size a multiple of the device count')


def shard(batch, devices=None):
  """This host's batch as one global batch, split along the first axis over
  the mesh's devices (each host's examples on its own devices)."""
  m = mesh(devices)
  _check_split(batch, m, 0)
  return _place(batch, NamedSharding(m, P(DATA_AXIS)))


def shard_steps(batches, devices=None):
  """Host batches of consecutive steps -> one global (steps, batch, ...) array,
  split along the batch axis, as train_steps takes them."""
  m = mesh(devices)
  stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *batches)
  _check_split(stacked, m, 1)
  return _place(stacked, NamedSharding(m, P(None, DATA_AXIS)))


def unreplicate(tree):
  """A replicated value (state, metrics, eval sums) fetched to host numpy.

  Read from one local device's buffer, so that nothing is computed: on
  several CPU processes a computation could meet the collectives of steps
  still in flight on another host in another order.
  """
  def first(x):
    if not isinstance(x, jax.Array):
      return np.asarray(x)
    return np.asarray(x.addressable_shards[0].data)

  return jax.tree_util.tree_map(first, tree)


def _mapped(per_device, devices, in_specs, donate):
  """jit(shard_map(per_device)) with replicated outputs; the wrapper places
  each argument by its spec (P(): replicated, else split)."""
  m = mesh(devices)
  shardings = [NamedSharding(m, spec) for spec in in_specs]
  # check_vma=False: a gradient is this device's own, which base.update then
  # averages (with replication types, the gradient of a replicated parameter
  # would come summed over devices already), and the families' loops need not
  # type their carries as varying. Outputs are the same on every device by the
  # contract (averaged over DATA_AXIS); the 4-devices-equal-1 test checks it.
  fn = jax.jit(jax.shard_map(per_device, mesh=m, in_specs=tuple(in_specs), out_specs=P(),
                             check_vma=False), donate_argnums=donate)

  def call(*args):
    return fn(*(_place(a, s) for a, s in zip(args, shardings)))

  return call


def train_step(step_fn, devices=None):
  """(state, batch, rng) -> (state, metrics), over `devices`.

  `rng` is one key for the step, shared by all devices; the family derives
  per-example or per-device keys from it (`families.base.example_keys`,
  `device_key`). `metrics` must be the same on every device (the family
  averages them over DATA_AXIS). The incoming state buffers are donated.
  """
  return _mapped(step_fn, devices, (P(), P(DATA_AXIS), P()), (0,))


def train_steps(step_fn, devices=None):
  """(state, batches, key, steps) -> (state, metrics): several train steps in one
  device call, for models whose step is short next to a dispatch.

  `batches` stacks one host batch per step (shard_steps); step i runs on
  batches[i] with the key `fold_in(key, steps[i])`, the key train_step's
  caller gives that step (genjax.train's stream('train', step)), so the state
  equals that of len(steps) single calls. Metrics come back with a leading
  steps axis.
  """
  def per_device(state, batches, key, steps):
    def one(state, xs):
      batch, step = xs
      return step_fn(state, batch, jax.random.fold_in(key, step))

    return jax.lax.scan(one, state, (batches, steps))

  return _mapped(per_device, devices, (P(), P(None, DATA_AXIS), P(), P()), (0,))


def eval_step(eval_fn, devices=None):
  """(state, batch, rng) -> sums over all devices.

  As in training, `rng` is one key shared by all devices.
  """
  def per_device(state, batch, rng):
    return jax.lax.psum(eval_fn(state, batch, rng), DATA_AXIS)

  return _mapped(per_device, devices, (P(), P(DATA_AXIS), P()), ())
