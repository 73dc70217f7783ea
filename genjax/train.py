"""The generic trainer: the same loop for every family (see genjax.families.base)."""
import collections
import dataclasses
import functools
import math
import zlib
import os
import signal
import threading
import time
from typing import Any, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import tqdm

from genjax import checkpoint, config_check, evals, parallel, writers
from genjax.errors import ConfigError, DivergedError
from genjax.families import base

# Distinct streams derived from the one base key.
_STREAMS = {'init': 0, 'train': 1, 'sample': 2, 'eval': 3}
# Steps the host may dispatch ahead of the device: it waits for step t - 2 to
# finish before going past step t. Enough to keep an accelerator busy; with no
# bound, CPU processes can deadlock with many collectives in flight
# (tests/test_multihost.py runs two).
_AHEAD = 2


def summarize(sums, likelihood, per_batch=()):
  """Eval sums -> means per example. With a likelihood and 'dims', 'nll' also
  gives nll_per_dim and bpd, and any other 'nll<suffix>' (say nll_k1, a second
  bound) gives bpd<suffix>. With the sums of each batch (`per_batch`, at least
  two holding examples), nll_per_dim, bpd and a points model's nll get a 95%
  interval (`<metric>_lo`, `<metric>_hi`): the ratio estimator's standard
  error over batches, batches being a random split of the examples."""
  sums = {k: float(v) for k, v in sums.items()}
  n = max(sums.pop('examples'), 1.0)
  dims = sums.pop('dims', None)
  out = {k: v / n for k, v in sums.items()}
  if likelihood != 'none' and dims:
    for k in [k for k in sums if k.startswith('nll')]:
      if k == 'nll':
        out['nll_per_dim'] = sums[k] / dims
      out['bpd' + k[3:]] = sums[k] / dims / math.log(2)
  if likelihood != 'none' and 'nll' in sums:
    half = _ratio_half_width(per_batch, 'nll', 'dims' if dims else 'examples')
    if half is not None:
      scaled = {'nll_per_dim': 1.0, 'bpd': 1 / math.log(2)} if dims else {'nll': 1.0}
      for key, scale in scaled.items():
        out[f'{key}_lo'], out[f'{key}_hi'] = out[key] - half * scale, out[key] + half * scale
  out['likelihood'] = likelihood
  return out


def _ratio_half_width(per_batch, num, den):
  """1.96 standard errors of sum(num) / sum(den) over batches (None: < 2 batches)."""
  rows = [(float(b[num]), float(b[den])) for b in per_batch if float(b.get('examples', 0)) > 0]
  if len(rows) < 2:
    return None
  x, d = np.array(rows).T
  ratio = x.sum() / d.sum()
  var = len(rows) / (len(rows) - 1) * np.sum((x - ratio * d) ** 2) / d.sum() ** 2
  return 1.96 * float(np.sqrt(var))


@dataclasses.dataclass(frozen=True)
class Result:
  """What a training run produced: the final host state (the selected model's
  under train.select), the final metrics of each evaluator ({name: metrics},
  and 'selected' with the selection), the step reached, the last samples an
  evaluator wrote and their path, and what stopped the run early, if anything."""
  state: Any
  metrics: dict
  step: int
  samples: Any = None
  samples_path: Optional[str] = None
  stopped_by: Optional[str] = None


class Experiment:
  """Dataset, family, compiled steps, evaluators and checkpoints for one config + workdir.

  `genjax.run` builds the dataset and the family and hands both in, so a
  family defined in a notebook trains without being registered.
  `start_state` is the state a run starts from: restored from the latest
  checkpoint onto this run's devices (config.mesh), or initialised on the
  host; training never changes it.
  """

  def __init__(self, config, workdir, data, family, record=True):
    self.config, self.workdir = config, workdir
    self.data, self.family = data, family
    self.key = jax.random.PRNGKey(config.seed)
    self.fsdp = config.mesh.fsdp if 'mesh' in config else 1
    parallel.mesh(fsdp=self.fsdp)  # a bad mesh.fsdp: before any work
    first = self.data.train_batch(0)
    # The share of the batch that one per-device step sees: a group's, with fsdp.
    groups = jax.device_count() // self.fsdp
    per_device = jax.tree_util.tree_map(
        lambda x: x[:max(1, x.shape[0] * jax.process_count() // groups)], first)
    init = functools.partial(self.family.init, self.stream('init'), per_device)
    self.checkpointer = checkpoint.Checkpointer(
        workdir, config, family.state_fields, record,
        layout=functools.partial(parallel.state_shardings, fsdp=self.fsdp))
    if self.checkpointer.latest_step is not None:
      self.start_state = self.checkpointer.restore_or(_structure(init))  # on the devices
    else:
      self.start_state = init()
      if jax.process_count() > 1:  # data-dependent init saw this host's batch only
        self.start_state = multihost_utils.broadcast_one_to_all(self.start_state)
    step_fn = self.family.train_step
    if config.train.get('skip_nonfinite_updates', False):
      step_fn = base.skip_nonfinite(step_fn, self.family.finite)
    self.p_train = parallel.train_step(step_fn, fsdp=self.fsdp)
    self.p_train_steps = parallel.train_steps(step_fn, fsdp=self.fsdp)  # steps_per_call > 1
    self.p_eval = parallel.eval_step(self.family.eval_step, fsdp=self.fsdp)
    self.evaluators = evals.build(config, evals.Context(
        family=family, data=data, data_config=config.data, workdir=workdir,
        key=self.eval_key, evaluate=self.evaluate, sample=self.sample))

  def place(self, state):
    """A host state on the devices, as the steps take it (config.mesh)."""
    return parallel.replicate(state, fsdp=self.fsdp)

  def shard(self, batch):
    return parallel.shard(batch, fsdp=self.fsdp)

  @property
  def step(self):
    """The step the run starts from."""
    return int(jax.device_get(self.start_state.step))

  def stream(self, name, *indices):
    """A key that is a pure function of the seed, the stream's name and `indices`."""
    key = jax.random.fold_in(self.key, _STREAMS[name])
    for i in indices:
      key = jax.random.fold_in(key, i)
    return key

  def eval_key(self, name, step):
    """Evaluator `name`'s key at `step`."""
    return jax.random.fold_in(self.stream('eval', zlib.crc32(name.encode())), step)

  def evaluate(self, rstate, split=None, max_batches=-1):
    """Summed eval_step over a split; batch b's key is stream('eval', 0, b) on
    every host (a replicated input: examples draw by their global index)."""
    total, per_batch = None, []
    for b, batch in enumerate(self.data.eval_batches(split, max_batches)):
      rng = self.stream('eval', 0, b)
      sums = self.p_eval(rstate, self.shard(batch), rng)
      total = sums if total is None else jax.tree_util.tree_map(lambda a, b: a + b, total, sums)
      per_batch.append(sums)
    per_batch = [parallel.unreplicate(s) for s in per_batch]  # one fetch, after the loop
    return summarize(parallel.unreplicate(total), self.family.likelihood, per_batch)

  def sample(self, state, step, num_samples=None, tag=None):
    num = num_samples or self.config.sample.num_samples
    samples = self.family.sample(state, self.stream('sample', step), num)
    name = tag or f'step_{step:07d}'
    data = None
    if self.data.info.modality == 'points':  # drawn beneath the samples
      batch = next(self.data.eval_batches(max_batches=1))
      data = batch['x'][batch['mask']]
    path = writers.write_samples(os.path.join(self.workdir, 'samples'), name, samples,
                                 self.data.info, data)
    return samples, path


def _mean(logged):
  """Metrics of each device call (scalars, or values with a steps axis where
  the call ran several steps) -> their means per step. Steps
  whose update was skipped (base.skip_nonfinite) are left out of the means and
  counted in 'skipped_updates'."""
  rows = []
  for m, steps in logged:
    if steps is None:
      rows.append({k: float(v) for k, v in m.items()})
    else:
      rows.extend({k: float(v[i]) for k, v in m.items()} for i in range(steps))
  kept = [r for r in rows if not r.get('skipped_updates')]
  mean = {k: float(np.mean([r[k] for r in kept])) if kept else float('nan') for k in rows[0]}
  if 'skipped_updates' in mean:
    mean['skipped_updates'] = float(len(rows) - len(kept))
  return mean


def _structure(init):
  """The state's structure (shapes, dtypes), which is all a restore needs:
  traced, not compiled nor run (a U-Net's init compiles for tens of seconds)."""
  try:
    return jax.eval_shape(init)
  except jax.errors.JAXTypeError:  # an init that computes on concrete values
    return init()


def _check_finite(mean, family, step, checkpointer):
  # The family's losses, and every gradient norm base.update logs (a NaN gradient
  # can come with a finite loss); failing those, the parameter norms.
  keys = list(family.finite) + sorted(k for k in mean if k.endswith('grad_norm'))
  bad = {k: mean[k] for k in keys if k in mean and not np.isfinite(mean[k])}
  bad = bad or {k: mean[k] for k in sorted(mean) if k.endswith('param_norm')
                and not np.isfinite(mean[k])}
  if bad:
    last = checkpointer.latest_step
    skipped = (f' (every update since the last log was skipped as non-finite: '
               f'{mean["skipped_updates"]:.0f})' if mean.get('skipped_updates') else '')
    raise DivergedError(
        f'{", ".join(f"{k} is {v}" for k, v in bad.items())} at step {step}{skipped}; '
        f'{family.advice} '
        f'({"no checkpoint was saved" if last is None else f"the last good checkpoint is step {last}"})')


def _unpack(out):
  """An evaluator's return -> (metrics, evals.Output or None)."""
  if isinstance(out, evals.Output):
    return dict(out.metrics), out
  return out, None


class _Profile:
  """`train.profile_steps='A,B'`: a jax.profiler trace of steps A to B-1 (the
  steps that start at A and end by B), written under workdir/profile for
  TensorBoard's or Perfetto's trace viewer."""

  def __init__(self, steps, workdir):
    self.range, self.active = None, False
    self.dir = os.path.join(workdir, 'profile')
    try:
      self.range = config_check.step_range(steps)
    except ValueError as e:
      raise ConfigError(str(e)) from None

  def before(self, step):
    if self.range and not self.active and self.range[0] <= step < self.range[1]:
      jax.profiler.start_trace(self.dir)
      self.active = True

  def after(self, done, metrics, say):
    if self.active and done >= self.range[1]:
      jax.block_until_ready(metrics)
      jax.profiler.stop_trace()
      self.active = False
      say(f'step {done}: profile of steps {self.range[0]}-{self.range[1] - 1} in {self.dir}')

  def close(self):  # the run ended inside the range: keep what was traced
    if self.active:
      jax.profiler.stop_trace()
      self.active = False


def train_and_evaluate(ex):
  """Trains (resuming from the latest checkpoint in ex.workdir) and evaluates;
  returns a `Result`.

  SIGTERM (on any host) saves a checkpoint and returns a Result with
  stopped_by='SIGTERM'; all hosts stop after the same step.
  """
  config, workdir = ex.config, ex.workdir
  tc = config.train
  profile = _Profile(tc.get('profile_steps', ''), workdir)  # a bad value: before any work
  start = ex.step
  writer = writers.MetricWriter(workdir, config)
  if start:
    print(f'resuming from step {start} in {workdir}', flush=True)
  rstate = ex.place(ex.start_state)  # the live copy; its buffers get donated
  stop = _StopOnSignal(tc.get('stop_check_every', 1))  # before the data thread starts
  batches = ex.data.train_iter(start)
  headline = ex.family.headline
  pending, final, done, stopped, drawn = [], {}, start, None, None
  in_flight = collections.deque()
  t0 = time.time()
  bar = tqdm.tqdm(total=tc.num_steps, initial=start, desc='train', dynamic_ncols=True,
                  disable=jax.process_index() != 0 or not tc.progress_bar)
  selector = _Selector(ex, tc.get('select', ''), bar.write)

  def log():  # every save comes after this check: an unchecked NaN is never written
    nonlocal pending
    if not pending:
      return
    mean = _mean(zip(jax.device_get([m for m, _ in pending]), [n for _, n in pending]))
    pending = []
    _check_finite(mean, ex.family, done, ex.checkpointer)
    mean['elapsed_s'] = time.time() - t0
    writer.write(done, 'train', mean)
    bar.set_postfix({headline: f'{mean[headline]:.4f}'})

  per_call = tc.get('steps_per_call', 1)
  boundary = _Boundaries(tc, ex.evaluators)
  try:
    while done < tc.num_steps:
      step = done
      profile.before(step)
      if per_call > 1 and step + per_call <= boundary.next(step):
        # Several steps in one call; no log, eval, save or stop check falls inside it.
        batch = parallel.shard_steps([next(batches) for _ in range(per_call)], fsdp=ex.fsdp)
        steps = np.arange(step, step + per_call, dtype=np.int32)
        rstate, metrics = ex.p_train_steps(rstate, batch, ex.stream('train'), steps)
        pending.append((metrics, per_call))
        done = step + per_call
      else:
        batch = ex.shard(next(batches))
        rstate, metrics = ex.p_train(rstate, batch, ex.stream('train', step))
        pending.append((metrics, None))
        done = step + 1
      host_state = functools.lru_cache(maxsize=1)(lambda: parallel.unreplicate(rstate))
      in_flight.append(metrics)
      if len(in_flight) > _AHEAD:
        jax.block_until_ready(in_flight.popleft())
      bar.update(done - step)
      profile.after(done, metrics, bar.write)
      stopping, late = stop.agreed(done, _out_of_time(tc, t0))
      is_last = done == tc.num_steps or late
      stopping = stopping and not is_last  # the last step is saved anyway
      saving = tc.checkpoint_every > 0 and done % tc.checkpoint_every == 0
      if done % tc.log_every == 0 or is_last or saving or stopping:
        log()
      if stopping:  # save first: a preempted VM has seconds left
        ex.checkpointer.maybe_save(done, lambda: rstate, force=True)
        stopped = stop.requested
        print(f'stopped by {stopped}: saved step {done} in {workdir}; the same command '
              'resumes', flush=True)
        break
      eval_rstate, eval_state = rstate, host_state
      for evaluator in selector.first(ex.evaluators):
        if evals.due(evaluator.cfg, done, is_last):
          # The selecting evaluator's last run sees the examples its earlier runs saw.
          whole = is_last and evaluator.name != selector.evaluator
          metrics, output = _unpack(evaluator.run(done, eval_rstate, eval_state, whole))
          drawn = output if output is not None and output.samples is not None else drawn
          if metrics:
            metrics['elapsed_s'] = time.time() - t0
            writer.write(done, evaluator.name, metrics)
            bar.write(f'step {done}: {evaluator.name} ' + _format(metrics))
          final[evaluator.name] = metrics
          if evaluator.name == selector.evaluator:
            selector.update(done, metrics, lambda: rstate)
            if is_last and selector.differs(done):  # the rest see the selected model
              eval_state = selector.restore(host_state)
              eval_rstate = ex.place(eval_state())
      if is_last and drawn is not None:
        bar.write(f'step {done}: samples in {drawn.path}')
      ex.checkpointer.maybe_save(done, lambda: rstate, force=is_last)
      if is_last:
        break
  except KeyboardInterrupt:
    # Keep the work done so far: the same command resumes from here.
    if done > start:
      log()
      ex.checkpointer.maybe_save(done, lambda: rstate, force=True)
      logging.warning('interrupted: saved step %d in %s', done, workdir)
    raise
  finally:
    profile.close()
    stop.restore()
    bar.close()
    batches.close()
    ex.checkpointer.close()
    writer.close()
  state = parallel.unreplicate(rstate)
  if stopped:
    return Result(state, {}, done, stopped_by=stopped)
  if done == start:  # the workdir already held a finished run: evaluate it
    print(f'{workdir} already holds a run of {start} steps; evaluating it', flush=True)
    host_state = functools.lru_cache(maxsize=1)(lambda: state)
    if selector.differs(done):
      host_state = selector.restore(host_state)
      rstate = ex.place(host_state())
    for e in ex.evaluators:
      final[e.name], output = _unpack(e.run(done, rstate, host_state, True))
      drawn = output if output is not None and output.samples is not None else drawn
  if selector.differs(done):
    state = selector.restore(lambda: state)()
  if selector.best:
    final['selected'] = dict(selector.best)
  return Result(state, final, done, drawn.samples if drawn else None,
                drawn.path if drawn else None)


class _Selector:
  """Model selection on `train.select` = 'EVALUATOR/METRIC' (lower is better), e.g.
  'validation/bpd': each time the evaluator improves the metric, the state is
  saved under workdir/best; at the end the evaluators after it, the returned
  state and therefore samples see that state, not the last one. An
  evaluator result without the metric (a model without a likelihood has no bits/dim)
  leaves the final model in place, with a note."""

  def __init__(self, ex, spec, write):
    self.ex, self.write = ex, write
    self.evaluator, _, self.metric = spec.partition('/')
    if spec and (not self.metric or self.evaluator not in ex.config.evals):
      raise ConfigError(f"train.select={spec!r}: expected 'EVALUATOR/METRIC' with EVALUATOR one "
                        f'of config.evals ({", ".join(ex.config.evals)})')
    self.best = ex.checkpointer.best() if spec else None

  def first(self, evaluators):
    return sorted(evaluators, key=lambda e: e.name != self.evaluator)

  def update(self, step, metrics, placed_state):
    if not self.metric:
      return
    value = metrics.get(self.metric)
    if value is None:
      self.write(f'note: train.select: {self.evaluator} reports no {self.metric!r}; the final '
                 'model is used')
      self.metric = ''
      return
    if self.best is None or value < self.best['value']:
      self.best = {'step': step, 'value': float(value), 'metric': f'{self.evaluator}/{self.metric}'}
      self.ex.checkpointer.save_best(step, placed_state(), self.best['metric'], float(value))

  def differs(self, step):
    return bool(self.metric) and self.best is not None and self.best['step'] != step

  def restore(self, host_state):
    if getattr(self, '_restored', None) is None:
      self.write(f'selected: step {self.best["step"]} ({self.best["metric"]} = '
                 f'{self.best["value"]:.4f}); the final evaluations use it')
      best = parallel.unreplicate(self.ex.checkpointer.restore_best(host_state()))
      self._restored = functools.lru_cache(maxsize=1)(lambda: best)
    return self._restored


class _Boundaries:
  """The steps after which the loop must regain control: the multiples of each
  cadence (logging, checkpoints, each evaluator, the hosts' stop check) and the
  last step. train.steps_per_call runs several steps per device call only
  between two of them, one step per call otherwise: two compiled steps at most,
  and every cadence honoured."""

  def __init__(self, tc, evaluators):
    every = [tc.log_every, tc.checkpoint_every] + [e.cfg.every for e in evaluators]
    if jax.process_count() > 1:
      every.append(tc.get('stop_check_every', 1))
    self.every = sorted({int(c) for c in every if c and c > 0})
    self.last = tc.num_steps

  def next(self, step):
    """The first boundary after `step`."""
    return min([self.last] + [(step // c + 1) * c for c in self.every])


def _out_of_time(tc, t0):
  """Whether train.max_seconds (0 = no limit) has passed on this host
  (_StopOnSignal.agreed makes the hosts agree)."""
  limit = tc.get('max_seconds', 0)
  return bool(limit) and time.time() - t0 >= limit


def _format(metrics):
  return ', '.join(f'{k}={v}' if isinstance(v, str) else f'{k}={v:.4f}'
                   for k, v in metrics.items() if k != 'elapsed_s')


class _StopOnSignal:
  """SIGTERM (a preempted VM, a cluster scheduler) asks the loop to checkpoint and stop.

  On several hosts, every host must leave the loop after the same step: they
  compare their flags in an all-gather that waits for every host, once every
  `every` steps (train.stop_check_every), so a request waits up to every - 1
  steps. One host alone checks at every step, for free.
  """

  def __init__(self, every=1):
    self.every = every
    self.requested = None
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def agreed(self, step, late=False):
    """(stop, late) after `step` steps: whether any host was asked to stop, or
    ran past train.max_seconds; the same on every host."""
    flags = np.array([self.requested is not None, late], np.int32)
    if jax.process_count() > 1:
      if step % self.every:
        return False, False
      flags = multihost_utils.process_allgather(flags).max(axis=0)
      if flags[0] and self.requested is None:
        self.requested = 'SIGTERM on another host'
    return bool(flags[0]), bool(flags[1])

  def _handle(self, signum, frame):
    del frame
    self.requested = signal.Signals(signum).name

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
