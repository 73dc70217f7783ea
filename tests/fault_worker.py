"""A training process for tests/test_faults.py that SIGKILLs itself in the
middle of writing checkpoint KILL_AT: every file of it is in orbax's temporary
directory, and the rename that commits it has not happened.

  python tests/fault_worker.py WORKDIR KILL_AT
"""
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

# pylint: disable=g-import-not-at-top,wrong-import-position
import ml_collections
from orbax.checkpoint._src.path import atomicity

from genjax import run, train
from test_harness import build_gaussian, gaussian_config


def config():
  """The Gaussian of tests/test_harness.py: 6 steps, a checkpoint every 2."""
  c = gaussian_config()
  c.train.num_steps, c.train.checkpoint_every, c.train.keep_checkpoints = 6, 2, 2
  c.train.log_every = 2
  c.evals = ml_collections.ConfigDict()
  return c


def experiment(workdir, c=None):
  return run.experiment(c or config(), workdir, build_family=build_gaussian)


def main(workdir, kill_at):
  commit = atomicity.AtomicRenameTemporaryPath.finalize

  async def finalize(self):
    if self.get_final().name == kill_at:
      os.kill(os.getpid(), signal.SIGKILL)
    return await commit(self)

  atomicity.AtomicRenameTemporaryPath.finalize = finalize
  train.train_and_evaluate(experiment(workdir))


if __name__ == '__main__':
  main(*sys.argv[1:])
