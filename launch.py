"""Trains, samples or evaluates one genjax experiment, a comparison, or a sweep.

  python launch.py
  python launch.py --config=experiments/autoregressive.py:pysrc --workdir=/tmp/ar
  python launch.py --config=... --workdir=/tmp/ar --mode=sample --config.sample.temperature=0.7
  python launch.py --config=... --workdir=/tmp/ar --mode=eval
  python launch.py --config=... --workdir=/tmp/sweep --sweep='optim.lr=1e-3,3e-4;seed=0,1'

The same command as `genjax` and `python -m genjax` (genjax/cli.py has the
flags and exit codes), run from a checkout. Running the same training command
again resumes from the latest checkpoint. With no arguments it runs the quick
comparison of the families on digits (experiments/compare.py:digits) into
./workdirs/default.
"""
import os

from genjax import cli

DEFAULT_CONFIG = 'experiments/compare.py:digits'

if __name__ == '__main__':
  cli.main(default_config=os.path.join(os.path.dirname(os.path.abspath(__file__)), DEFAULT_CONFIG))
