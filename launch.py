"""Trains, samples or evaluates one genjax experiment, a comparison, or a sweep.

  python launch.py
  python launch.py --config=experiments/autoregressive.py:pysrc --workdir=/tmp/ar
  python launch.py --config=... --workdir=/tmp/ar --mode=sample --config.sample.temperature=0.7
  python launch.py --config=... --workdir=/tmp/ar --mode=eval
  python launch.py --config=... --workdir=/tmp/sweep --sweep='optim.lr=1e-3,3e-4;seed=0,1'

Running the same training command again resumes from the latest checkpoint.
With no arguments it runs the quick comparison of the five families on digits
(experiments/compare.py:digits) into ./workdirs/default.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

DEFAULT_CONFIG = 'experiments/compare.py:digits'
config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(os.path.abspath(__file__)), DEFAULT_CONFIG),
    'Experiment config file[:variant].', lock_config=True)
flags.DEFINE_string('workdir', 'workdirs/default', 'Checkpoints, metrics and samples go here.')
flags.DEFINE_enum('mode', 'train', ['train', 'sample', 'eval'], 'What to do.')
flags.DEFINE_string('split', None, 'eval mode: split to evaluate (default data.eval_split).')
flags.DEFINE_string('sweep', None, "Overrides to sweep, 'a.b=1,2;seed=0,1': one run per "
                    'combination, then a table (genjax.sweep).')
flags.DEFINE_bool('distributed', False,
                  'Multi-host: join the other hosts first (jax.distributed.initialize(), which '
                  'detects a TPU pod slice or a SLURM job); run the same command on every host.')
flags.DEFINE_string('coordinator', '', "Multi-host where nothing is detected: process 0's "
                    'host:port, with --num_processes and --process_id (implies --distributed).')
flags.DEFINE_integer('num_processes', 0, 'Multi-host: the number of processes (with --coordinator).')
flags.DEFINE_integer('process_id', -1, "Multi-host: this process's index (with --coordinator).")
flags.DEFINE_bool('keep_freed_memory', True,
                  'On a CPU, ask glibc to keep freed memory for reuse (one arena, no mmap, no '
                  "trimming), so that XLA's per-step temporaries are not faulted in afresh each "
                  'step; the process then keeps its peak memory (genjax.hostmem). '
                  '--nokeep_freed_memory keeps the C library defaults.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # pylint: disable=g-import-not-at-top
  from genjax import hostmem, parallel, run
  from genjax.errors import GenjaxError
  if FLAGS.keep_freed_memory and hostmem.runs_on_cpu():
    hostmem.keep_freed_memory()  # before JAX starts its threads
  run.xla_flags(FLAGS.config)  # before JAX starts its backends
  logging.set_verbosity(logging.WARNING)
  try:
    if FLAGS.distributed or FLAGS.coordinator or FLAGS.num_processes or FLAGS.process_id >= 0:
      parallel.initialize_hosts(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
    if FLAGS.config.family == 'compare':
      from genjax import compare
      compare.main(FLAGS.config, FLAGS.workdir, command=' '.join(['python'] + sys.argv))
    elif FLAGS.sweep:
      from genjax import sweep
      sweep.main(FLAGS.config, FLAGS.workdir, FLAGS.sweep, run.main)
    else:
      run.main(FLAGS.config, FLAGS.workdir, FLAGS.mode, FLAGS.split)
  except GenjaxError as e:
    sys.exit(f'genjax: {e}')  # one actionable sentence, no traceback


def _parse_flags(argv):
  try:
    return FLAGS(argv)
  except (KeyError, AttributeError) as e:  # a misspelt --config.field: ml_collections says which
    field, _, hint = str(e.args[0] if e.args else e).strip('\'"').partition('\n')
    sys.exit(f'genjax: the config has no field {field.strip(chr(39))!r}' + (f'; {hint}' if hint else ''))


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
