"""One process of a 2-process run on this machine, for tests/test_multihost.py.

  python tests/multihost_worker.py PHASE --coordinator=127.0.0.1:PORT --process_id=I --out=DIR

The families named by --families (all registered ones by default; the test
runs one per pair, so that xdist spreads them over its workers) run inside the
process pair of a phase, each on its smoke config without evaluators:

  first   per family: an uninterrupted run of its 4 steps ('straight'); an
          evaluation on uneven shards (host 0 holds a quarter of the split);
          a run into 'resumed' given up at step 3. The last family's run does
          not give up: it waits, its checkpoints written, for the test to
          SIGKILL both processes.
  resume  per family: 'resumed' again, from its checkpoints, to the end.

With --fsdp=4 the state is split over a group of devices that spans both
hosts, so each host holds, and checkpoints, a part of each split leaf.

Each phase writes DIR/PHASE_p<I>.json (per step and family: a digest of the
state, the examples this host read) and, per run, the final state as npz.
What the multi-host stop check costs is measured by bench/stop_check.py.
"""
import argparse
import faulthandler
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from genjax import checkpoint, families, parallel, run, train
from genjax.data import pipeline
from genjax.data.pipeline import Dataset

FAMILIES = sorted(families.REGISTRY)
# The evaluation on uneven shards runs for a text and an image family: what it
# checks (padding to the same number of batches, sums over hosts) is the
# trainer's and the pipeline's, and each family's eval step is another compile.
UNEVEN_EVAL = ('autoregressive', 'flow')
TEXT_BYTES = 20_000


def smoke_config(name, fsdp=1):
  """The family's contract smoke config without evaluators, a U-Net family on
  its DiT: what is checked is the state across hosts, not the network.
  `fsdp`: mesh.fsdp (with 4, one group of devices spans both hosts)."""
  from test_contract import on_transformer, smoke_config as contract_smoke  # tests/ conftest's jax flags
  config = on_transformer(contract_smoke(name, evals=False))
  config.mesh.fsdp = fsdp
  return config


def state_digest(rstate):
  """sha256 of the first local device's copy of the state; and whether every
  local copy equals it."""
  copies = [[np.asarray(s.data) for s in x.addressable_shards]
            for x in jax.tree_util.tree_leaves(rstate)]
  same = all(np.array_equal(x[0], y) for x in copies for y in x)
  h = hashlib.sha256()
  for x in copies:
    h.update(np.ascontiguousarray(x[0]).tobytes())
  return h.hexdigest(), same


class Reads:
  """What each training batch read: global example indices (images, points) or
  the global byte range its windows were cut from (text)."""
  local = threading.local()

  def __init__(self):
    self.by_step = {}
    real_batch, real_read, real_text = Dataset.train_batch, Dataset._read, Dataset._text_stream
    reads = self

    def train_batch(data, step):
      Reads.local.items = []
      try:
        return real_batch(data, step)
      finally:
        reads.by_step[int(step)] = Reads.local.items
        Reads.local.items = None

    def read(data, split, indices):
      if getattr(Reads.local, 'items', None) is not None:
        n = len(data._source(split))
        Reads.local.items.append(['examples', n, [int(i) for i in indices]])
      return real_read(data, split, indices)

    def text_stream(data, split, host=None):
      stream = real_text(data, split, host)
      if getattr(Reads.local, 'items', None) is not None:
        full = data._text[split]
        lo = stream.ctypes.data - full.ctypes.data
        Reads.local.items.append(['bytes', len(full), [lo, lo + len(stream)]])
      return stream

    Dataset.train_batch, Dataset._read, Dataset._text_stream = train_batch, read, text_stream

  def take(self):
    out, self.by_step = self.by_step, {}
    return {str(k): v for k, v in sorted(out.items())}


class _GiveUp(Exception):
  pass


def trace_steps(ex, digests, at_step=None, on_step=None):
  """Records the state's digest after every step; calls on_step() before step at_step."""
  real = getattr(ex, 'untraced_p_train', ex.p_train)
  start = ex.step

  def step(rstate, batch, rng):
    if at_step is not None and start + len(digests) == at_step:
      on_step()
    rstate, metrics = real(rstate, batch, rng)
    digests.append(state_digest(rstate))
    return rstate, metrics

  ex.untraced_p_train, ex.p_train = real, step


def save_state(path, state):
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  np.savez(path, **{jax.tree_util.keystr(p): np.asarray(x) for p, x in flat})


def uneven_eval(config, ex, state):
  """Evaluates with host 0 holding a quarter of the split, host 1 the rest (of
  its first TEXT_BYTES, for text: the whole split is 37,000 windows)."""
  real_range, text = pipeline._host_range, ex.data.info.modality == 'text'

  def quarter(n, p=None):
    p = jax.process_index() if p is None else p
    n = min(n, TEXT_BYTES) if text else n
    return (0, n // 4) if p == 0 else (n // 4, n)

  own, summarize, raw = ex.data, train.summarize, {}
  pipeline._host_range = quarter
  try:
    data = Dataset(config.data, seed=config.seed)
    split = 'validation'
    batches = list(data.eval_batches(split))
    real = [int(b['mask'].sum()) for b in batches]
    ex.data = data
    train.summarize = lambda sums, *rest: raw.update(sums) or summarize(sums, *rest)
    ex.evaluate(parallel.replicate(state), split)
  finally:
    pipeline._host_range, train.summarize, ex.data = real_range, summarize, own
  sums = {k: float(v) for k, v in raw.items()}
  return {'batches': len(batches), 'real_batches': sum(r > 0 for r in real),
          'examples_read': sum(real), 'sums': sums,
          'split_size': None if text else data.info.num_examples[split]}


def clock(what, t0=[time.time()]):  # pylint: disable=dangerous-default-value
  print(f'{time.time() - t0[0]:7.1f} s: {what}', flush=True)


def phase_first(args, reads):
  out = {}
  for name in args.families:
    clock(f'{name}: straight')
    config = smoke_config(name, args.fsdp)
    record = out[name] = {}
    d = os.path.join(args.out, name)
    ex = run.experiment(config, os.path.join(d, 'straight'))
    initial, digests = ex.start_state, []
    trace_steps(ex, digests)
    clock(f'{name}: built')
    final = train.train_and_evaluate(ex).state
    record['straight'] = {'digests': digests, 'reads': reads.take()}
    save_state(os.path.join(d, f'straight_p{args.process_id}.npz'), final)
    if name in UNEVEN_EVAL and args.fsdp == 1:
      clock(f'{name}: uneven eval')
      record['uneven_eval'] = uneven_eval(config, ex, final)
      reads.take()

    # The run to interrupt: the same experiment (its steps are compiled) from the
    # same initial state, in a new workdir.
    clock(f'{name}: given up at step 3')
    if name == args.families[0]:  # two checkpoints (2, 3), so the test can damage the latest
      config.train.checkpoint_every = 1
    ex.workdir = os.path.join(d, 'resumed')
    ex.checkpointer = checkpoint.Checkpointer(ex.workdir, config, ex.family.state_fields,
                                              layout=ex.checkpointer.layout)
    ex.start_state = initial
    last = name == args.families[-1]

    def give_up(ex=ex, last=last):
      ex.checkpointer.wait()  # its last checkpoint is complete
      if last:
        _write_json(args, out)
        open(os.path.join(args.out, f'ready_p{args.process_id}'), 'w').close()
        time.sleep(600)  # the test SIGKILLs both processes here
      raise _GiveUp

    trace_steps(ex, [], at_step=3, on_step=give_up)
    try:
      train.train_and_evaluate(ex)
    except _GiveUp:
      pass
    reads.take()
  return out


def phase_resume(args, reads):
  out = {}
  for name in args.families:
    clock(f'{name}: resumed')
    d = os.path.join(args.out, name)
    ex = run.experiment(smoke_config(name, args.fsdp), os.path.join(d, 'resumed'))
    start, digests = ex.step, []
    trace_steps(ex, digests)
    clock(f'{name}: built')
    final = train.train_and_evaluate(ex).state
    clock(f'{name}: trained')
    out[name] = {'start': start, 'digests': digests, 'reads': reads.take()}
    save_state(os.path.join(d, f'resumed_p{args.process_id}.npz'), final)
  return out


def _write_json(args, out):
  path = os.path.join(args.out, f'{args.phase}_p{args.process_id}.json')
  with open(path + '.tmp', 'w') as f:
    json.dump(out, f)
  os.replace(path + '.tmp', path)


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def worker_env(cache=None):
  # A few steps per compile: XLA's backend optimisations would cost more than they save.
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=2 '
             '--xla_backend_optimization_level=0')
  env.pop('PYTHONPATH', None)
  if cache:  # the second phase's pair reuses the first's compiles
    env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='1',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  return env


def start_pair(phase, out, *extra, cache=None, logs=None):
  """Popen of the two processes of `phase`; their output goes to out/PHASE_p<I>.log."""
  os.makedirs(out, exist_ok=True)
  port = free_port()
  procs = []
  for i in range(2):
    log = open(os.path.join(out, f'{phase}_p{i}.log'), 'w')
    procs.append(subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), phase, f'--coordinator=127.0.0.1:{port}',
         f'--process_id={i}', f'--out={out}', *extra],
        cwd=ROOT, env=worker_env(cache), stdout=log, stderr=subprocess.STDOUT))
  return procs


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('phase', choices=['first', 'resume'])
  parser.add_argument('--coordinator', default='')
  parser.add_argument('--process_id', type=int, default=-1)
  parser.add_argument('--out', default='')
  parser.add_argument('--families', default=','.join(FAMILIES))
  parser.add_argument('--fsdp', type=int, default=1)
  args = parser.parse_args()
  args.families = args.families.split(',')
  faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's stack dump on a timeout
  parallel.initialize_hosts(args.coordinator, 2, args.process_id)
  reads = Reads()
  out = {'first': phase_first, 'resume': phase_resume}[args.phase](args, reads)
  _write_json(args, out)


if __name__ == '__main__':
  main()
