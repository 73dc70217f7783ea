"""Two processes on this machine as two hosts: jax.distributed over 127.0.0.1,
2 CPU devices each, every registered family (a test each; tests/multihost_worker.py
runs a family in one process pair per phase).

What is checked: each host reads only its own shard of each training batch;
the hosts hold the same state after every step; a run whose two processes are
SIGKILLed resumes, on two new processes, to the state of an uninterrupted run
(after dropping a damaged latest checkpoint: orbax's delete meets the other
host at a barrier); an evaluation where one host holds a quarter of the split
finishes, with the same sums on both hosts; SIGTERM to one host stops both
after the same step, and that step is saved; a state split over devices of
both hosts (mesh.fsdp) is checkpointed by each host and resumes.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import chex
import numpy as np
import pytest

import multihost_worker as worker
from genjax import families, parallel
from genjax.errors import ConfigError

FAMILIES = sorted(families.REGISTRY)
TIMEOUT = 400  # seconds per phase: a deadlock fails the test instead of hanging the suite


def _logs(out, phase, last=60):
  """Both processes' output of `phase`: the `last` lines of each (None: all)."""
  text = ''
  for i in range(2):
    path = os.path.join(out, f'{phase}_p{i}.log')
    if os.path.exists(path):
      lines = [l for l in open(path).read().splitlines() if '[Gloo]' not in l]
      text += f'--- process {i}:\n' + '\n'.join(lines[-last:] if last else lines) + '\n'
  return text


def _stop(procs, out, phase, why):
  for p in procs:  # the stacks of a stuck worker (it registers SIGUSR1 with faulthandler)
    if p.poll() is None:
      p.send_signal(signal.SIGUSR1)
  time.sleep(1)
  for p in procs:
    p.kill()
    p.wait()
  pytest.fail(f'{phase}: {why}\n{_logs(out, phase)}')


def wait_for(procs, out, phase, until=None):
  """Until both processes exit 0, or until `until()` holds while both run."""
  deadline = time.time() + TIMEOUT
  while time.time() < deadline:
    codes = [p.poll() for p in procs]
    if until is not None and until():
      return
    if any(c not in (None, 0) for c in codes) or (until is not None and None not in codes):
      _stop(procs, out, phase, f'a process exited with {codes}')
    if until is None and codes == [0, 0]:
      return
    time.sleep(0.2)
  _stop(procs, out, phase, f'still running after {TIMEOUT} s (a deadlock?)')


def load(out, phase):
  return [json.load(open(os.path.join(out, f'{phase}_p{i}.json'))) for i in range(2)]


def state(out, name, run, host):
  with np.load(os.path.join(out, name, f'{run}_p{host}.npz')) as f:
    return dict(f)


def first_until_killed(out, cache, *extra):
  """The 'first' phase, until both processes wait with their step-3 checkpoint
  written; then both die at once (SIGKILL)."""
  procs = worker.start_pair('first', out, *extra, cache=cache)
  ready = lambda: all(os.path.exists(os.path.join(out, f'ready_p{i}')) for i in range(2))
  wait_for(procs, out, 'first', until=ready)
  for p in procs:
    p.kill()
    p.wait()


def check_reads(name, reads0, reads1, host_batch):
  """Per step: each host read host_batch examples of its own half of the split,
  and none that the other read (text: byte ranges in its own half)."""
  for step in ('0', '1', '2', '3'):
    (kind, n, a), = reads0[step]
    (_, _, b), = reads1[step]
    if kind == 'examples':
      assert len(a) == len(b) == host_batch, (name, step)
      assert not set(a) & set(b), (name, step, sorted(set(a) & set(b)))
      assert max(a) < n // 2 <= min(b), (name, step, 'read outside its shard')
    else:  # the windows of a text batch are cut from one byte range per host
      assert a == [0, n // 2] and b == [n // 2, n], (name, step, a, b)


@pytest.mark.parametrize('name', FAMILIES)
def test_family_trains_resumes_and_evaluates_on_two_hosts(name, tmp_path):
  out, cache = str(tmp_path), str(tmp_path / 'jax_cache')
  first_until_killed(out, cache, f'--families={name}')
  first = load(out, 'first')

  # The run kept checkpoints 2 and 3: a crash damaged 3.
  damaged = os.path.join(out, name, 'resumed', 'checkpoints', '3')
  largest = max(_files(damaged), key=os.path.getsize)
  with open(largest, 'r+b') as f:
    f.truncate(os.path.getsize(largest) // 2)

  procs = worker.start_pair('resume', out, f'--families={name}', cache=cache)
  wait_for(procs, out, 'resume')
  resumed = load(out, 'resume')
  # Anywhere in the log: orbax's tracebacks of the damaged checkpoint's pending
  # reads, printed when they are collected, may follow the line by any number.
  said = _logs(out, 'resume', last=None)
  assert 'checkpoint 3 in' in said and 'damaged' in said, _logs(out, 'resume')

  a, b = first[0][name], first[1][name]
  digests = [d for d, _ in a['straight']['digests']]
  assert len(digests) == 4 and len(set(digests)) == 4, name
  # Every step leaves the same state on both hosts and on each host's devices.
  assert digests == [d for d, _ in b['straight']['digests']], name
  assert all(same for _, same in a['straight']['digests'] + b['straight']['digests']), name
  check_reads(name, a['straight']['reads'], b['straight']['reads'], 16 // 2)

  if name in worker.UNEVEN_EVAL:
    # Host 0 holds a quarter of the split: it pads with empty batches, and the
    # sums over both hosts (the same on each) count every example once.
    u0, u1 = a['uneven_eval'], b['uneven_eval']
    assert u0['batches'] == u1['batches'] and u0['real_batches'] < u1['real_batches'], name
    assert u0['sums'] == u1['sums'], name
    assert u0['sums']['examples'] == u0['examples_read'] + u1['examples_read'], name
    if u0['split_size'] is not None:
      assert u0['sums']['examples'] == u0['split_size'], name

  r0, r1 = resumed[0][name], resumed[1][name]
  assert r0['start'] == r1['start'] == 2, name
  assert [d for d, _ in r0['digests']] == [d for d, _ in r1['digests']] == digests[2:], name
  for s in ('2', '3'):  # a batch is a pure function of the step
    assert r0['reads'][s] == a['straight']['reads'][s], (name, s)
  straight = state(out, name, 'straight', 0)
  chex.assert_trees_all_equal(straight, state(out, name, 'straight', 1))
  chex.assert_trees_all_equal(straight, state(out, name, 'resumed', 0))
  chex.assert_trees_all_equal(straight, state(out, name, 'resumed', 1))


def _files(directory):
  return [os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs]


def test_a_state_split_over_both_hosts_checkpoints_each_hosts_shards_and_resumes(tmp_path):
  """mesh.fsdp=4 over two hosts of two devices: one group spans both hosts, so
  each host holds half of every split leaf. Each host writes the shards it
  holds (orbax's files per process), and the SIGKILLed run resumes from them,
  on two new processes, to the state of the uninterrupted run."""
  name = 'autoregressive'
  out, cache = str(tmp_path), str(tmp_path / 'jax_cache')
  first_until_killed(out, cache, f'--families={name}', '--fsdp=4')
  saved = os.path.join(out, name, 'resumed', 'checkpoints', '3')
  written = {}
  for path in _files(saved):  # each process's array data
    host = re.search(r'ocdbt\.process_(\d+)/d/', path)
    if host:
      written[host.group(1)] = written.get(host.group(1), 0) + os.path.getsize(path)
  params = sum(x.size * x.itemsize for x in state(out, name, 'straight', 0).values())
  # Each host wrote its part of the state, and neither wrote all of it.
  assert sorted(written) == ['0', '1'] and all(params / 4 < n < params for n in written.values()), (
      written, params)

  procs = worker.start_pair('resume', out, f'--families={name}', '--fsdp=4', cache=cache)
  wait_for(procs, out, 'resume')
  resumed = load(out, 'resume')
  assert resumed[0][name]['start'] == resumed[1][name]['start'] == 3, name
  straight = state(out, name, 'straight', 0)
  chex.assert_trees_all_equal(straight, state(out, name, 'straight', 1))
  chex.assert_trees_all_equal(straight, state(out, name, 'resumed', 0))
  chex.assert_trees_all_equal(straight, state(out, name, 'resumed', 1))


def test_sigterm_to_one_host_stops_both_after_the_same_step_and_saves_it(tmp_path):
  workdir = tmp_path / 'run'
  port = worker.free_port()
  procs = []
  for i in range(2):
    log = open(tmp_path / f'launch_p{i}.log', 'w')
    procs.append(subprocess.Popen(
        [sys.executable, 'launch.py', '--config=experiments/autoregressive.py:pysrc,smoke',
         f'--workdir={workdir}', '--config.train.num_steps=100000',
         '--config.train.log_every=1', '--config.train.checkpoint_every=0',
         '--config.train.stop_check_every=5', f'--coordinator=127.0.0.1:{port}',
         '--num_processes=2', f'--process_id={i}'],
        cwd=worker.ROOT, env=worker.worker_env(), stdout=log, stderr=subprocess.STDOUT))
  metrics = workdir / 'metrics.jsonl'
  logs = lambda: '\n'.join(open(tmp_path / f'launch_p{i}.log').read() for i in range(2))
  deadline = time.time() + TIMEOUT
  while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
    if time.time() > deadline or any(p.poll() is not None for p in procs):
      for p in procs:
        p.kill()
      pytest.fail(f'training did not start:\n{logs()[-5000:]}')
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGTERM)  # host 1 only
  try:
    codes = [p.wait(timeout=TIMEOUT) for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f'the hosts did not stop together:\n{logs()[-5000:]}')
  assert codes == [0, 0], logs()[-5000:]
  said = [re.findall(r'stopped by (.+): saved step (\d+) in', open(
      tmp_path / f'launch_p{i}.log').read()) for i in range(2)]
  assert said[0][0][0] == 'SIGTERM on another host' and said[1][0][0] == 'SIGTERM', said
  step = int(said[0][0][1])
  assert int(said[1][0][1]) == step and step % 5 == 0, said
  assert sorted(os.listdir(workdir / 'checkpoints')) == [str(step)]
  last = json.loads(metrics.read_text().splitlines()[-1])
  assert last['step'] == step  # no step after the saved one was trained


def test_multihost_flags_go_together():
  with pytest.raises(ConfigError, match='go together'):
    parallel.initialize_hosts('10.0.0.1:8476', 0, -1)
  with pytest.raises(ConfigError, match=r'--process_id=2 must be in \[0, --num_processes=2\)'):
    parallel.initialize_hosts('10.0.0.1:8476', 2, 2)
