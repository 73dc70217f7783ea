"""Data parallelism: the one place that maps per-device steps over devices,
and that joins the hosts of a multi-host run.

A step is `jax.jit` of `jax.shard_map` over a `Mesh` with axes (DATA_AXIS,
FSDP_AXIS): the family's per-device function sees its share of the batch
and averages over DATA_AXIS itself. Outside a step, state, metrics and eval
sums are global `jax.Array`s, and a batch is one global array split along
its first axis over every device, each host holding its own examples.

With the default fsdp=1 every device holds the whole state (plain data
parallelism). With fsdp=N (config.mesh.fsdp) the devices form groups of N:
each state leaf is split over a group's devices along its largest axis that
N divides (`state_spec`), a step runs per group with XLA gathering each leaf
where it is read, and a group holds about 1/N of the state per device.

Callers hand host values (numpy, or arrays on any device) to the wrappers
below, which place them; `replicate` and `shard` place them ahead of time.

`devices` everywhere: None for every device of every host, an int n for the
first n local devices, or a list of devices.
"""
import functools

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from genjax.errors import ConfigError
from genjax.families.base import DATA_AXIS

# The mesh axis that a state splits over (mesh.fsdp > 1).
FSDP_AXIS = 'fsdp'


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


def mesh(devices=None, fsdp=1):
  """The (DATA_AXIS, FSDP_AXIS) mesh over `devices`: len(devices) / fsdp
  groups of `fsdp` devices. The batch splits over every device; the state
  splits over the fsdp axis (fsdp > 1) and is the same in every group."""
  if devices is None:
    devices = jax.devices()
  elif isinstance(devices, int):
    devices = jax.local_devices()[:devices]
  devices = tuple(devices)
  if fsdp < 1 or len(devices) % fsdp:
    raise ConfigError(f'mesh.fsdp={fsdp} must divide the {len(devices)} devices')
  return _mesh(devices, fsdp)


@functools.lru_cache(maxsize=None)
def _mesh(devices, fsdp):
  return Mesh(np.array(devices).reshape(-1, fsdp), (DATA_AXIS, FSDP_AXIS))


def state_spec(shape, fsdp):
  """A state leaf's split: over the fsdp axis along its largest axis that
  fsdp divides (the first of equals), or replicated where none does."""
  sizes = [(n, -i) for i, n in enumerate(shape) if n % fsdp == 0]
  if fsdp == 1 or not sizes:
    return P()
  axis = -max(sizes)[1]
  return P(*[None] * axis, FSDP_AXIS)  # as XLA writes it back: no trailing Nones


def _sharding(m, spec):
  """NamedSharding(m, spec); on a one-device mesh the device's own sharding,
  which is what jit gives back there (another kind of input would retrace)."""
  if m.devices.size == 1:
    return jax.sharding.SingleDeviceSharding(m.devices.flat[0])
  return NamedSharding(m, spec)


def _state_shardings(tree, m):
  fsdp = m.shape[FSDP_AXIS]
  return jax.tree_util.tree_map(lambda x: _sharding(m, state_spec(np.shape(x), fsdp)), tree)


def state_shardings(tree, devices=None, fsdp=1):
  """The shardings `replicate` gives a state with `tree`'s shapes (arrays or
  jax.ShapeDtypeStruct): where a checkpoint restores each leaf to."""
  return _state_shardings(tree, mesh(devices, fsdp))


def _place(tree, shardings, local=False, copy=False):
  """Host values -> global arrays with `shardings` (one for the whole tree, or
  a tree of them); arrays already so placed pass, unless `copy`. `local`:
  each host gives its own examples (a batch), not the whole value."""
  one_host = jax.process_count() == 1

  def put(x, sharding):
    if isinstance(x, jax.Array) and (
        x.sharding == sharding or x.sharding.is_equivalent_to(sharding, x.ndim)):
      # A copy stays on the devices: each shard gets a buffer of its own.
      return jax.device_put(x, sharding, may_alias=False) if copy else x
    # Through the host, so every device gets a buffer of its own: a state may
    # hold one array twice (an EMA initialised to the parameters), and its
    # buffers get donated. (device_put with may_alias=False still shared the
    # first device's buffer over several CPU devices, and the step crashed.)
    x = np.asarray(x)
    if one_host:
      return jax.device_put(x, sharding)
    if local:
      return jax.make_array_from_process_local_data(sharding, x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree_util.tree_map(lambda x: put(x, shardings), tree)
  return jax.tree_util.tree_map(put, tree, shardings)


# A batch splits over every device: the data axis, then within a group.
_BATCH = ((DATA_AXIS, FSDP_AXIS),)


def replicate(tree, devices=None, fsdp=1):
  """A copy of a state on the mesh, as a step takes and gives it back (a
  step donates it): the same in every group of devices, each leaf split over
  the group's fsdp devices (state_spec). In a multi-host run every host
  passes the same value."""
  m = mesh(devices, fsdp)
  return _place(tree, _state_shardings(tree, m), copy=True)


def _check_split(batch, m, axis):
  n = m.devices.size // jax.process_count()
  for x in jax.tree_util.tree_leaves(batch):
    if np.shape(x)[axis] % n:
      raise ValueError(f'host batch of {np.shape(x)[axis]} does not split over {n} devices; '
                       f'make data.batch_size a multiple of the device count')


def shard(batch, devices=None, fsdp=1):
  """This host's batch as one global batch, split along the first axis over
  every device of the mesh (each host's examples on its own devices)."""
  m = mesh(devices, fsdp)
  _check_split(batch, m, 0)
  return _place(batch, _sharding(m, P(*_BATCH)), local=True)


def shard_steps(batches, devices=None, fsdp=1):
  """Host batches of consecutive steps -> one global (steps, batch, ...) array,
  split along the batch axis, as train_steps takes them."""
  m = mesh(devices, fsdp)
  stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *batches)
  _check_split(stacked, m, 1)
  return _place(stacked, _sharding(m, P(None, *_BATCH)), local=True)


def unreplicate(tree):
  """A state, metrics or eval sums fetched to host numpy, whole.

  A replicated leaf is read from one local device's buffer, so that nothing
  is computed: on several CPU processes a computation could meet the
  collectives of steps still in flight on another host in another order. A
  leaf split over fsdp devices is assembled from its shards (gathered from
  the other hosts where they hold some).
  """
  def whole(x):
    if not isinstance(x, jax.Array):
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_shards[0].data)
    if x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree_util.tree_map(whole, tree)


def state_bytes(tree, device):
  """Bytes of a placed state's leaves held on `device`."""
  return sum(s.data.nbytes for x in jax.tree_util.tree_leaves(tree)
             for s in x.addressable_shards if s.device == device)


def _mapped(per_device, m, specs, donate):
  """jit(shard_map(per_device)) with replicated outputs, over mesh m; the
  wrapper places each argument by its kind in `specs`: 'state' (first, and
  given back as the first output where donated), 'batch', 'steps' (a stacked
  batch), 'replicated'."""
  fsdp = m.shape[FSDP_AXIS]
  manual = {'state': P(), 'batch': P(DATA_AXIS), 'steps': P(None, DATA_AXIS),
            'replicated': P()}
  placed = {'batch': P(*_BATCH), 'steps': P(None, *_BATCH), 'replicated': P()}
  # check_vma=False: a gradient is this device's own, which base.update then
  # averages (with replication types, the gradient of a replicated parameter
  # would come summed over devices already), and the families' loops need not
  # type their carries as varying. Outputs are the same on every device by the
  # contract (averaged over DATA_AXIS); the 4-devices-equal-1 test checks it.
  # With fsdp > 1 only the data axis is manual: XLA splits the state over the
  # fsdp axis and gathers each leaf where the step reads it.
  if fsdp > 1 and m.shape[DATA_AXIS] == 1:
    # One group: no manual axis at all, and DATA_AXIS bound by a vmap of size 1.
    # (XLA's partitioner refuses the families' mean over a manual axis of size
    # 1 once the state is split over the other axis: 'Cross-partition
    # allreduce must be in (partial) manual partitioning mode'.)
    def mapped(*args):
      axes = tuple(None if k in ('state', 'replicated') else 0 for k in specs)
      args = [a if ax is None else jax.tree_util.tree_map(lambda x: x[None], a)
              for a, ax in zip(args, axes)]
      out = jax.vmap(per_device, in_axes=axes, axis_name=DATA_AXIS)(*args)
      return jax.tree_util.tree_map(lambda x: x[0], out)
  else:
    mapped = jax.shard_map(per_device, mesh=m, in_specs=tuple(manual[k] for k in specs),
                           out_specs=P(), check_vma=False,
                           axis_names={DATA_AXIS} if fsdp > 1 else {DATA_AXIS, FSDP_AXIS})

  def run(*args):
    # Outputs laid out as the wrapper places inputs (a new state keeps the old
    # one's split), so that the next call neither moves nor retraces them.
    out = mapped(*args)
    replicated = _sharding(m, P())
    if m.devices.size == 1:
      return out
    if donate:
      state = jax.lax.with_sharding_constraint(out[0], _state_shardings(args[0], m))
      return (state,) + jax.lax.with_sharding_constraint(tuple(out[1:]), replicated)
    return jax.lax.with_sharding_constraint(out, replicated)

  fn = jax.jit(run, donate_argnums=(0,) if donate else ())
  last = [None]  # the state this wrapper gave back last: placed already

  def call(*args):
    state, *rest = args
    if state is not last[0]:  # a step's own output skips the per-leaf checks
      state = _place(state, _state_shardings(state, m))
    out = fn(state, *(_place(a, _sharding(m, placed[k]), local=k != 'replicated')
                      for a, k in zip(rest, specs[1:])))
    if donate:  # (an eval's state is not held here: it may be dropped after)
      last[0] = out[0]
    return out

  call.lower = fn.lower  # on placed arguments (replicate, shard): compile ahead, inspect
  return call


def train_step(step_fn, devices=None, fsdp=1):
  """(state, batch, rng) -> (state, metrics), over `devices`.

  `rng` is one key for the step, shared by all devices; the family derives
  per-example or per-device keys from it (`families.base.example_keys`,
  `device_key`). `metrics` must be the same on every device (the family
  averages them over DATA_AXIS). A state already laid out on the mesh (a
  step's output, a `replicate` copy; on one device, any array there) is
  donated: its buffers are reused. With fsdp > 1 the state lives split over groups of `fsdp` devices
  (`replicate`), and the family sees its group's share of the batch.
  """
  return _mapped(step_fn, mesh(devices, fsdp), ('state', 'batch', 'replicated'), True)


def train_steps(step_fn, devices=None, fsdp=1):
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

  return _mapped(per_device, mesh(devices, fsdp), ('state', 'steps', 'replicated', 'replicated'),
                 True)


def eval_step(eval_fn, devices=None, fsdp=1):
  """(state, batch, rng) -> sums over all devices.

  As in training, `rng` is one key shared by all devices.
  """
  def per_device(state, batch, rng):
    return jax.lax.psum(eval_fn(state, batch, rng), DATA_AXIS)

  return _mapped(per_device, mesh(devices, fsdp), ('state', 'batch', 'replicated'), False)
