"""The generic trainer: the same loop for every family (see genjax.families.base)."""
import functools
import math
import os
import signal
import threading
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import tqdm

from genjax import checkpoint, families, parallel, writers
from genjax.data import Dataset

# Distinct streams derived from the one base key.
_INIT, _TRAIN, _SAMPLE = 0, 1, 2


def summarize(sums):
  """Eval sums -> means per example, plus nll_per_dim / bpd when possible."""
  sums = {k: float(v) for k, v in sums.items()}
  n = max(sums.pop('examples'), 1.0)
  dims = sums.pop('dims', None)
  out = {k: v / n for k, v in sums.items()}
  if dims and 'nll' in sums:
    out['nll_per_dim'] = sums['nll'] / dims
    out['bpd'] = out['nll_per_dim'] / math.log(2)
  return out


class Experiment:
  """Dataset, family, compiled steps and checkpoints for one config + workdir."""

  def __init__(self, config, workdir):
    self.config, self.workdir = config, workdir
    self.data = Dataset(config.data, seed=config.seed)
    self.family = families.build(config, self.data.info)
    self.key = jax.random.PRNGKey(config.seed)
    self.num_devices = jax.local_device_count()
    first = self.data.train_batch(0)
    per_device = jax.tree_util.tree_map(lambda x: x[:x.shape[0] // self.num_devices], first)
    state = self.family.init(jax.random.fold_in(self.key, _INIT), per_device)
    if jax.process_count() > 1:  # data-dependent init saw this host's batch only
      state = multihost_utils.broadcast_one_to_all(state)
    self.checkpointer = checkpoint.Checkpointer(workdir, config)
    self.state = self.checkpointer.restore_or(state)  # host copy
    self.p_train = parallel.pmap_train_step(self.family.train_step)
    self.p_eval = parallel.pmap_eval_step(self.family.eval_step)
    self.last_samples = None  # (samples, path) of the last ex.sample during training

  @property
  def step(self):
    return int(jax.device_get(self.state.step))

  def evaluate(self, rstate, split=None, max_batches=-1):
    total = None
    for batch in self.data.eval_batches(split, max_batches):
      sums = self.p_eval(rstate, parallel.shard(batch))
      total = sums if total is None else jax.tree_util.tree_map(lambda a, b: a + b, total, sums)
    return summarize(parallel.unreplicate(total))

  def sample(self, state, step, num_samples=None, tag=None):
    num = num_samples or self.config.sample.num_samples
    rng = jax.random.fold_in(jax.random.fold_in(self.key, _SAMPLE), step)
    samples = self.family.sample(state, rng, num)
    name = tag or f'step_{step:07d}'
    path = writers.write_samples(os.path.join(self.workdir, 'samples'), name, samples, self.data.info)
    return samples, path


def train_and_evaluate(config, workdir, ex=None):
  """Trains (resuming from the latest checkpoint in workdir); returns final eval metrics.

  On SIGTERM it saves a checkpoint and returns {'stopped_by': 'SIGTERM', 'step': s}.
  Afterwards `ex` (an Experiment, made here if not given) holds the final host
  state in `ex.state` and the last samples written in `ex.last_samples`.
  """
  ex = ex or Experiment(config, workdir)
  tc = config.train
  start = ex.step
  writer = writers.MetricWriter(workdir)
  if start:
    print(f'resuming from step {start} in {workdir}', flush=True)
  rstate = parallel.replicate(ex.state)
  ex.state = None  # the replicated copy is the live one; its buffers get donated
  stop = _StopOnSignal()  # before the data thread starts
  batches = ex.data.train_iter(start)
  train_key = jax.random.fold_in(ex.key, _TRAIN)
  pending, final, done = [], {}, start
  t0 = time.time()
  bar = tqdm.tqdm(total=tc.num_steps, initial=start, desc='train', dynamic_ncols=True,
                  disable=jax.process_index() != 0 or not tc.progress_bar)
  try:
    for step in range(start, tc.num_steps):
      if stop.agreed():
        ex.checkpointer.maybe_save(done, lambda: parallel.unreplicate(rstate), force=True)
        print(f'stopped by {stop.requested}: saved step {done} in {workdir}; the same command '
              'resumes', flush=True)
        break
      batch = parallel.shard(next(batches))
      rstate, metrics = ex.p_train(rstate, batch, jax.random.fold_in(train_key, step))
      host_state = functools.lru_cache(maxsize=1)(lambda: parallel.unreplicate(rstate))
      pending.append(metrics)
      done = step + 1
      bar.update(1)
      is_last = done == tc.num_steps
      saving = tc.checkpoint_every > 0 and done % tc.checkpoint_every == 0
      if done % tc.log_every == 0 or is_last or saving:  # never checkpoint an unchecked NaN
        logged = jax.device_get(pending)
        mean = {k: float(np.mean([m[k][0] for m in logged])) for k in logged[0]}
        pending = []
        if not np.isfinite(mean['loss']):
          last = ex.checkpointer.latest_step
          raise FloatingPointError(
              f'training loss is {mean["loss"]} at step {done}; lower optim.lr or raise '
              f'optim.warmup_steps ({"no checkpoint was saved" if last is None else f"the last good checkpoint is step {last}"})')
        mean['elapsed_s'] = time.time() - t0
        writer.write(done, 'train', mean)
        bar.set_postfix(loss=f'{mean["loss"]:.4f}')
      if (tc.eval_every > 0 and done % tc.eval_every == 0) or is_last:
        metrics = ex.evaluate(rstate, max_batches=-1 if is_last else tc.eval_batches)
        metrics['elapsed_s'] = time.time() - t0
        writer.write(done, 'eval', metrics)
        bar.write(f'step {done}: eval ' + ', '.join(f'{k}={v:.4f}' for k, v in metrics.items()))
        if jax.process_index() == 0 and config.sample.num_samples > 0:
          ex.last_samples = ex.sample(host_state(), done)
          bar.write(f'step {done}: samples in {ex.last_samples[1]}')
        final = metrics
      ex.checkpointer.maybe_save(done, host_state, force=is_last)
  except KeyboardInterrupt:
    # Keep the work done so far: the same command resumes from here.
    if done > start:
      ex.checkpointer.maybe_save(done, lambda: parallel.unreplicate(rstate), force=True)
      logging.warning('interrupted: saved step %d in %s', done, workdir)
    raise
  finally:
    stop.restore()
    bar.close()
    batches.close()
    ex.checkpointer.close()
    writer.close()
  ex.state = parallel.unreplicate(rstate)
  if stop.requested:
    return {'stopped_by': stop.requested, 'step': done}
  if not final:  # the workdir already held a finished run: report it
    print(f'{workdir} already holds a run of {start} steps; evaluating it', flush=True)
    final = ex.evaluate(rstate)
  return final


class _StopOnSignal:
  """SIGTERM (a preempted VM, a cluster scheduler) asks the loop to checkpoint and stop."""

  def __init__(self):
    self.requested = None
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def agreed(self):
    """Whether any host was asked to stop; all hosts must leave the loop together."""
    if jax.process_count() > 1:
      flags = multihost_utils.process_allgather(np.int32(self.requested is not None))
      if flags.max() and self.requested is None:
        self.requested = 'SIGTERM on another host'
    return self.requested is not None

  def _handle(self, signum, frame):
    del frame
    self.requested = signal.Signals(signum).name

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
