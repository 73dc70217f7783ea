"""Faults on one host: a process SIGKILLed in the middle of a checkpoint write,
a batch that makes the update NaN, a full or read-only workdir. The family is
the diagonal Gaussian of test_harness.py (its steps compile in a moment); the
run is fault_worker.config(): 6 steps, a checkpoint every 2, 2 kept."""
import errno
import json
import os
import signal
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
from orbax.checkpoint._src.path import atomicity

import fault_worker
from genjax import parallel, train
from genjax.data import Dataset
from genjax.errors import DivergedError, WorkdirError

WORKER = os.path.abspath(fault_worker.__file__)


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """The final state of an uninterrupted run."""
  ex = fault_worker.experiment(str(tmp_path_factory.mktemp('straight')))
  return train.train_and_evaluate(ex).state


def steps_on_disk(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())


def test_sigkill_while_a_checkpoint_is_written_resumes_from_the_previous_one(tmp_path, straight):
  workdir = str(tmp_path / 'run')
  out = subprocess.run([sys.executable, WORKER, workdir, '4'], capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
  names = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert any(n.startswith('4.orbax-checkpoint-tmp') for n in names), names  # killed mid-write
  assert steps_on_disk(workdir) == [2]

  ex = fault_worker.experiment(workdir)
  assert ex.step == 2  # lost 4 - 2 steps: at most train.checkpoint_every
  assert not any('tmp' in n for n in os.listdir(os.path.join(workdir, 'checkpoints')))
  chex.assert_trees_all_equal(train.train_and_evaluate(ex).state, straight)


def poison(monkeypatch, at_step):
  real = Dataset.train_batch

  def train_batch(self, step):
    batch = real(self, step)
    return {**batch, 'x': batch['x'] * np.nan} if step == at_step else batch

  monkeypatch.setattr(Dataset, 'train_batch', train_batch)


def test_a_nonfinite_update_is_skipped_and_counted(tmp_path, monkeypatch):
  config = fault_worker.config()
  config.train.skip_nonfinite_updates = True
  config.train.log_every = config.train.checkpoint_every = 3
  poison(monkeypatch, at_step=2)
  ex = fault_worker.experiment(str(tmp_path), config)
  params, real = [], ex.p_train

  def traced(rstate, batch, rng):
    rstate, metrics = real(rstate, batch, rng)
    params.append(parallel.unreplicate(rstate).params)
    return rstate, metrics

  ex.p_train = traced
  result = train.train_and_evaluate(ex)
  chex.assert_trees_all_equal(params[2], params[1])  # step 2's update was dropped
  assert not np.array_equal(params[3]['mean'], params[2]['mean'])  # and training went on
  assert int(result.state.step) == 6
  logged = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert [(l['step'], l['skipped_updates']) for l in logged] == [(3, 1.0), (6, 0.0)]
  assert all(np.isfinite(l['loss']) for l in logged)
  restored = fault_worker.experiment(str(tmp_path), config).start_state
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(restored))


def test_without_skipping_a_nan_before_sigterm_is_not_saved(tmp_path, monkeypatch):
  config = fault_worker.config()
  config.train.log_every, config.train.checkpoint_every = 100, 0
  poison(monkeypatch, at_step=1)
  ex = fault_worker.experiment(str(tmp_path), config)
  real, calls = ex.p_train, []

  def step_then_sigterm(rstate, batch, rng):
    out = real(rstate, batch, rng)
    calls.append(1)
    if len(calls) == 2:  # after the NaN step: the loop stops and would save here
      os.kill(os.getpid(), signal.SIGTERM)
    return out

  ex.p_train = step_then_sigterm
  with pytest.raises(DivergedError, match='loss is nan'):
    train.train_and_evaluate(ex)
  assert not os.path.exists(tmp_path / 'checkpoints') or steps_on_disk(str(tmp_path)) == []


@pytest.mark.parametrize('fault', ['disk_full', 'read_only'])
def test_a_full_or_read_only_workdir_stops_with_one_sentence_and_keeps_the_checkpoints(
    tmp_path, monkeypatch, straight, fault):
  """Read-only is real (chmod) when not running as root; root writes through
  permissions, so there, as for a full disk, orbax's commit of checkpoint 6
  raises the OSError that the kernel would (EROFS, ENOSPC)."""
  workdir = str(tmp_path / 'run')
  checkpoints = os.path.join(workdir, 'checkpoints')
  ex = fault_worker.experiment(workdir)
  if fault == 'read_only' and os.geteuid() != 0:
    reason, real = 'Permission denied', ex.p_train

    def step(rstate, batch, rng):
      if int(parallel.unreplicate(rstate).step) == 5:  # checkpoint 4 was asked for
        ex.checkpointer.wait()
        os.chmod(checkpoints, 0o555)
      return real(rstate, batch, rng)

    ex.p_train = step
  else:
    code = errno.ENOSPC if fault == 'disk_full' else errno.EROFS
    reason, commit = os.strerror(code), atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self):
      if self.get_final().name == '6':
        raise OSError(code, os.strerror(code), str(self.get()))
      return await commit(self)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize', finalize)
  try:
    with pytest.raises(WorkdirError) as error:
      train.train_and_evaluate(ex)
  finally:
    os.chmod(checkpoints, 0o755)
    monkeypatch.undo()
  message = str(error.value)
  assert '\n' not in message
  assert f'cannot write checkpoint 6 in the workdir {workdir} ({reason})' in message, message
  assert 'intact (latest: step 4)' in message, message
  assert steps_on_disk(workdir) == [2, 4]
  ex = fault_worker.experiment(workdir)
  assert ex.step == 4
  chex.assert_trees_all_equal(train.train_and_evaluate(ex).state, straight)
