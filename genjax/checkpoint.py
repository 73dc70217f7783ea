"""Checkpoints with orbax's CheckpointManager, plus the config they belong to.

The config is written to `workdir/config.json` on the first run; a later run
in the same workdir whose family, dataset or any of the family's
`state_fields` differ is refused with a message, rather than failing deep
inside a restore.

Faults: orbax writes a checkpoint into a temporary directory and renames it
when complete, so a process killed mid-write leaves the previous checkpoints
as they were (the temporary directory is removed on the next start). A disk
that fills up or turns read-only stops the run with one `WorkdirError`
sentence naming the workdir; old checkpoints are only deleted after a new one
is complete. On several hosts every host calls every method here: orbax
meets the hosts at barriers.

Nothing is gathered to be written: a leaf split over devices (mesh.fsdp > 1)
is written by each host from the shards it holds, and a leaf that every
device holds whole is written once, from one device's copy (as a host array:
orbax spends less per leaf on those). A restore reads each leaf into the
shardings that `layout` gives, so a run resumes on another mesh or device
count.
"""
import contextlib
import json
import os

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from genjax import parallel
from genjax.errors import GenjaxError, WorkdirError

# Every family's state depends on these; the family adds its own `state_fields`.
_MUST_MATCH = ('family', 'data.name')
# Fields inside those that may change between runs (e.g. sampling without dropout).
_FREE_FIELDS = ('dropout', 'dtype', 'remat')
# Fields a resumed run needs unchanged to equal an uninterrupted one.
_SHOULD_MATCH = ('seed', 'data.batch_size', 'train.num_steps', 'optim')


class CheckpointMismatchError(GenjaxError, RuntimeError):
  pass


def _lookup(cfg_dict, dotted):
  for key in dotted.split('.'):
    cfg_dict = cfg_dict.get(key) if isinstance(cfg_dict, dict) else None
  if isinstance(cfg_dict, dict):
    cfg_dict = {k: v for k, v in cfg_dict.items() if k not in _FREE_FIELDS}
  return cfg_dict


def _to_write(state):
  """A placed state as orbax is handed it: replicated leaves as one device's
  copy on the host, split leaves as global arrays (see the module's doc)."""
  return jax.tree_util.tree_map(
      lambda x: x if isinstance(x, jax.Array) and not x.is_fully_replicated else
      parallel.unreplicate(x), state)


class Checkpointer:
  """`state_fields`: the family's config fields that fix its state (Family.state_fields).
  `record`: write the config to workdir/config.json (a training run); an
  evaluation or sampling run with other settings leaves the record alone.
  `layout`: state structure -> the shardings a restore puts each leaf in
  (parallel.state_shardings); None for host numpy arrays."""

  def __init__(self, workdir, config, state_fields=(), record=True, layout=None):
    self.must_match = _MUST_MATCH + tuple(state_fields)
    self.record = record
    self.layout = layout
    self.workdir = os.path.abspath(workdir)
    self.config = config
    self.every = config.train.checkpoint_every
    self._in_flight = None  # the step of an asynchronous save not yet known complete
    with self._writes():
      self._manager = ocp.CheckpointManager(
          os.path.join(self.workdir, 'checkpoints'),
          options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints,
                                               create=True, cleanup_tmp_directories=True))
      # orbax removes an interrupted save's temporary directory in a thread and waits for it
      # only at the next save; a resumed run should not show the leftovers until then.
      getattr(self._manager, '_maybe_await_cleanup_tmp_directory', lambda: None)()
      self._check_config()

  @contextlib.contextmanager
  def _writes(self, step=None):
    """OSError (a full disk, a read-only workdir) -> one WorkdirError sentence."""
    try:
      yield
    except OSError as e:
      if isinstance(e, GenjaxError):
        raise
      reason = str(e.strerror or e).splitlines()[0][:200]
      directory = os.path.join(self.workdir, 'checkpoints')
      kept = sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(
          directory) else []
      intact = f'the checkpoints in it are intact (latest: step {kept[-1]})' if kept else (
          'it holds no checkpoint')
      what = f'checkpoint {step}' if step is not None else 'its config and checkpoints'
      raise WorkdirError(f'cannot write {what} in the workdir {self.workdir} ({reason}); {intact}. '
                         'Free space or make it writable and run the same command to resume, or '
                         'use another --workdir') from e

  def _check_config(self):
    path = os.path.join(self.workdir, 'config.json')
    new = json.loads(self.config.to_json())
    if os.path.exists(path) and self._manager.latest_step() is not None:
      with open(path) as f:
        old = json.load(f)
      diffs = [k for k in self.must_match if _lookup(old, k) != _lookup(new, k)]
      if diffs:
        raise CheckpointMismatchError(
            f'the checkpoints in {self.workdir} were written by a config whose '
            f'{", ".join(diffs)} differ from this one; use a new --workdir, or the config in '
            f'{path}')
      changed = [k for k in _SHOULD_MATCH if _lookup(old, k) != _lookup(new, k)]
      if changed and self.record:  # only a run that trains on differs
        print(f'note: {", ".join(changed)} changed since the checkpoints in {self.workdir} were '
              'written; the resumed run will differ from an uninterrupted one', flush=True)
    if self.record and jax.process_index() == 0:
      os.makedirs(self.workdir, exist_ok=True)
      with open(path + '.tmp', 'w') as f:  # other hosts may be reading the old one
        f.write(self.config.to_json(indent=2))
      os.replace(path + '.tmp', path)

  def _abstract(self, state):
    """The restore target: `state`'s shapes and dtypes, in the layout's shardings."""
    if self.layout is None:
      return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
    return jax.tree_util.tree_map(
        lambda x, sharding: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding),
        state, self.layout(state))

  @property
  def latest_step(self):
    return self._manager.latest_step()

  def restore_or(self, state):
    """The latest checkpoint restored into `state`'s structure (laid out as
    `layout` says), or `state`.

    A latest checkpoint that cannot be read while an older one can (a file
    truncated or lost by a crash, a full disk) is damaged: it is deleted, with
    a warning naming its step, and training resumes from the older one. If none
    can be read, the state does not fit this config: an error says so.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      return state
    abstract = self._abstract(state)
    damaged, first_error = [], None
    for step in steps:
      try:
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
        first_error = first_error or e
        damaged.append(step)
        continue
      for bad in damaged:
        logging.warning('checkpoint %d in %s is damaged (%s: %s); deleted, resuming from %d',
                        bad, self.workdir, type(first_error).__name__,
                        str(first_error).splitlines()[0][:200], step)
        print(f'warning: checkpoint {bad} in {self.workdir} is damaged and was deleted; '
              f'resuming from checkpoint {step}', flush=True)
        self._manager.delete(bad)  # every host: orbax deletes on process 0, then a barrier
      if damaged:
        self._manager.reload()
      return restored
    raise CheckpointMismatchError(
        f'checkpoint {steps[0]} in {self.workdir} does not fit this config\'s state '
        f'({str(first_error).splitlines()[0][:300]}); use a new --workdir') from first_error

  # The model selected on a validation metric (config.train.select): one
  # checkpoint under workdir/best, and best.json with its step and value, written
  # after the checkpoint is complete, so a resumed run keeps selecting from it.
  def _best_manager(self):
    if not hasattr(self, '_best'):
      self._best = ocp.CheckpointManager(
          os.path.join(self.workdir, 'best'),
          options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    return self._best

  def best(self):
    """{'step', 'value', 'metric'} of the selected model so far, or None."""
    path = os.path.join(self.workdir, 'best.json')
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def save_best(self, step, state, metric, value):
    manager = self._best_manager()
    with self._writes(step):
      if manager.latest_step() != step:
        manager.save(step, args=ocp.args.StandardSave(_to_write(state)))
        manager.wait_until_finished()
      if jax.process_index() == 0:
        path = os.path.join(self.workdir, 'best.json')
        with open(path + '.tmp', 'w') as f:
          json.dump({'step': step, 'value': value, 'metric': metric}, f)
        os.replace(path + '.tmp', path)

  def restore_best(self, state):
    best = self.best()
    return self._best_manager().restore(best['step'],
                                        args=ocp.args.StandardRestore(self._abstract(state)))

  def maybe_save(self, step, state_fn, force=False):
    """Saves `state_fn()` at multiples of train.checkpoint_every, or if forced.

    The write goes on in the background while training continues; its errors
    surface at the next save or at `close`.
    """
    if force or (self.every > 0 and step % self.every == 0):
      if self._manager.latest_step() != step:
        self.wait()
        with self._writes(step):
          self._manager.save(step, args=ocp.args.StandardSave(_to_write(state_fn())))
        self._in_flight = step

  def wait(self):
    """Waits for the save in flight, if any, to be complete."""
    with self._writes(self._in_flight):
      self._manager.wait_until_finished()
    self._in_flight = None

  def close(self):
    self.wait()
    self._manager.close()
    if hasattr(self, '_best'):
      self._best.close()
      del self._best
