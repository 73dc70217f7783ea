"""Trains, samples or evaluates one genjax experiment, a comparison, or a sweep.

  genjax --config=vae:digits,smoke --workdir=/tmp/smoke
  genjax --config=experiments/vae.py:digits --workdir=/tmp/vae
  genjax --config=vae:digits --workdir=/tmp/vae --mode=sample --config.sample.num_samples=16
  genjax --config=vae:digits --workdir=/tmp/vae --mode=eval --split=test
  genjax --config=autoregressive:digits --workdir=/tmp/sweep --sweep='optim.lr=1e-3,3e-4;seed=0,1'

`--config` takes a config file (a path, from the current directory) or the
name of a shipped config (vae, diffusion, compare, ...; genjax.configs), then
`:VARIANT` and optionally `,smoke` (a few steps). `python -m genjax` and the
repository's launch.py are the same command. Running the same training command
again resumes from the latest checkpoint; with no --config it runs the quick
comparison of the families on digits (compare:digits) into ./workdirs/default.

Exit status: 0 done (also after SIGTERM, which saves a checkpoint and stops);
2 a command line that cannot work (flag, config, variant, override), found
before anything runs; 1 an error found while running (the workdir, the data, a
diverged loss); 130 Ctrl-C. Each error is one line on stderr, `genjax: ...`.
Ctrl-C in training saves the step reached and says so; a second one stops at
once.
"""
import difflib
import functools
import os
import re
import shlex
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_dict, config_flags

from genjax import configs
from genjax.errors import ConfigError, GenjaxError

FLAGS = flags.FLAGS
DEFAULT_CONFIG = 'compare:digits'
_MODES = ('train', 'sample', 'eval')
_OURS = ('config', 'workdir', 'mode', 'split', 'sweep', 'distributed', 'coordinator',
         'num_processes', 'process_id', 'keep_freed_memory')


def main(argv=None, default_config=DEFAULT_CONFIG):
  """The console script `genjax`, `python -m genjax` and launch.py."""
  argv = list(sys.argv if argv is None else argv)
  command = ' '.join([_prog(argv[0])] + [shlex.quote(a) for a in argv[1:]])  # for a shell
  sys.argv = argv  # config_flags reads the --config.* overrides from sys.argv
  if getattr(sys.modules.get('__main__'), '__doc__', None) is None:
    sys.modules['__main__'].__doc__ = __doc__  # what --help prints
  try:
    path, arg = configs.resolve(default_config)
  except ConfigError as e:
    _exit(e, 1)
  default = path if arg is None else f'{path}:{arg}'
  _define_flags(default)
  try:
    app.run(lambda rest: _run(command), argv=argv,
            flags_parser=functools.partial(_parse_flags, default=default))
  except KeyboardInterrupt:  # before the run started
    _exit('interrupted', 130)


def _define_flags(default_config):
  if 'workdir' in FLAGS:
    return
  config_flags.DEFINE_config_file(
      'config', default_config, 'Config file or shipped config name, then :VARIANT[,smoke].',
      lock_config=True)
  flags.DEFINE_string('workdir', 'workdirs/default', 'Checkpoints, metrics and samples go here.')
  flags.DEFINE_enum('mode', 'train', list(_MODES), 'What to do.')
  flags.DEFINE_string('split', None, 'eval mode: split to evaluate (default data.eval_split).')
  flags.DEFINE_string('sweep', None, "Overrides to sweep, 'a.b=1,2;seed=0,1': one run per "
                      'combination, then a table (genjax.sweep).')
  flags.DEFINE_bool('distributed', False,
                    'Multi-host: join the other hosts first (jax.distributed.initialize(), which '
                    'detects a TPU pod slice or a SLURM job); run the same command on every host.')
  flags.DEFINE_string('coordinator', '', "Multi-host where nothing is detected: process 0's "
                      'host:port, with --num_processes and --process_id (implies --distributed).')
  flags.DEFINE_integer('num_processes', 0,
                       'Multi-host: the number of processes (with --coordinator).')
  flags.DEFINE_integer('process_id', -1, "Multi-host: this process's index (with --coordinator).")
  flags.DEFINE_bool('keep_freed_memory', True,
                    'On a CPU, ask glibc to keep freed memory for reuse (no mmap, no '
                    "trimming), so that XLA's per-step temporaries are not faulted in afresh each "
                    'step; the process then keeps its peak memory (genjax.hostmem). '
                    '--nokeep_freed_memory keeps the C library defaults.')
  for name in _OURS:  # --help lists them (it lists the main module's flags)
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def _parse_flags(argv, default):
  """absl's flag parsing, with every mistake in the command line one sentence (exit 2)."""
  argv = list(argv)
  where, prefix, spec = _config_arg(argv)
  config = None
  try:
    if where is not None:  # a config name becomes its file's path, which config_flags loads
      path, arg = configs.resolve(spec)
      argv[where] = prefix + (path if arg is None else f'{path}:{arg}')
      sys.argv = argv
    config = configs.load(spec if where is not None else default)
    _check_overrides(config, argv)
    rest = FLAGS(argv)
  except ConfigError as e:
    _exit(e, 2)
  except flags.Error as e:
    _exit(_flag_error(e, config), 2)
  except (KeyError, AttributeError) as e:  # an override that _check_overrides let through
    _exit(f'an override names no field of the config: {_innermost(e)}', 2)
  if len(rest) > 1:
    _exit(f'unexpected arguments {rest[1:]}; every option is a --flag=value', 2)
  _check_workdir(FLAGS.workdir)
  return rest


def _run(command):
  if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # nohup and & ignore it: keep that
    signal.signal(signal.SIGINT, _CtrlC())
  config, workdir = FLAGS.config, FLAGS.workdir
  try:
    # pylint: disable=g-import-not-at-top
    from genjax import hostmem, parallel, run
    if FLAGS.keep_freed_memory and hostmem.runs_on_cpu():
      hostmem.keep_freed_memory()  # before JAX starts its threads
    run.xla_flags(config)  # before JAX starts its backends
    logging.set_verbosity(logging.WARNING)
    if FLAGS.distributed or FLAGS.coordinator or FLAGS.num_processes or FLAGS.process_id >= 0:
      parallel.initialize_hosts(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
    if config.family == 'compare':
      from genjax import compare
      result = compare.main(config, workdir, command=command)
    elif FLAGS.sweep:
      from genjax import sweep
      result = sweep.main(config, workdir, FLAGS.sweep, run.main)
    else:
      result = run.main(config, workdir, FLAGS.mode, FLAGS.split)
  except GenjaxError as e:
    _exit(e, 1)
  except KeyboardInterrupt:
    _exit(_interrupted(workdir, FLAGS.mode), 130)
  if isinstance(result, dict) and result.get('stopped_by') == 'SIGINT':
    sys.exit(130)  # the trainer printed the step it saved and that the command resumes


class _CtrlC:
  """Ctrl-C in the training loop stops it as SIGTERM does: the step reached is
  saved, one line says so, and the run returns. Outside the loop (building
  the data, compiling, evaluating after training), and a second time, it
  interrupts at once."""

  def __init__(self):
    self.asked = False

  def __call__(self, signum, frame):
    on_term = signal.getsignal(signal.SIGTERM)  # the trainer's, while it trains
    if callable(on_term) and not self.asked:
      self.asked = True
      on_term(signum, frame)
    else:
      raise KeyboardInterrupt


def _interrupted(workdir, mode):
  if mode != 'train':
    return f'interrupted ({mode}); nothing was changed in {workdir}'
  steps = _saved_steps(workdir)
  if steps:
    return (f'interrupted; step {steps[-1]} is saved in {workdir}: run the same command '
            'to resume from it')
  return f'interrupted before the first checkpoint; nothing in {workdir} to resume from'


def _saved_steps(workdir):
  """The steps checkpointed in `workdir` (orbax names each step's directory by its number)."""
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def _check_workdir(workdir):
  """A workdir that cannot be a directory is refused before anything is written."""
  path = os.path.abspath(workdir)
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    where = 'is a file' if existing == path else f'is under a file ({existing})'
    _exit(f'the workdir {workdir} {where}; give --workdir a directory (a new one is created)', 1)


def _check_overrides(config, argv):
  """--config.a.b=... must name a field; a misspelt one gets the nearest field's name."""
  for a in argv[1:]:
    m = re.match(r'^--?(?:no)?config\.([^=\[]+)', a)
    if not m:
      continue
    node, seen = config, []
    for part in m.group(1).split('.'):
      if not isinstance(node, (config_dict.ConfigDict, dict)):
        break  # a dataclass or other value: ml_collections decides
      if part not in node:
        field = '.'.join(seen + [part])
        near = _nearest(config, seen, part)
        hint = f'; Did you mean "{near}" instead of "{field}"?' if near else ''
        raise ConfigError(f'the config has no field {field!r}{hint}')
      node, seen = node[part], seen + [part]


def _nearest(config, parents, name):
  """model.latent_dim for model.latnet_dim; optim.lr for train.lr; None."""
  node = config
  for p in parents:
    node = node[p]
  close = difflib.get_close_matches(name, list(node.keys()), 1, 0.6)
  if close:
    return '.'.join(parents + close)
  same = [p for p in _paths(config) if p.rsplit('.', 1)[-1] == name]
  return ' or '.join(same[:3]) or None


def _paths(node, prefix=''):
  for k, v in node.items():
    yield prefix + k
    if isinstance(v, (config_dict.ConfigDict, dict)):
      yield from _paths(v, prefix + k + '.')


def _flag_error(e, config):
  """absl's message made one sentence, with the field's type or the nearest flag."""
  if isinstance(e, flags.UnrecognizedFlagError):
    name = getattr(e, 'flagname', '') or str(e)
    close = difflib.get_close_matches(name, list(_OURS), 1, 0.6)
    hint = f'; did you mean --{close[0]}?' if close else ''
    return f'unknown flag --{name}{hint} (--help lists them)'
  msg = ' '.join(str(e).split())
  m = re.match(r'flag --([\w.]+)=(.*?): (.*)$', msg)
  if not m:
    return msg
  name, value, reason = m.groups()
  if name.startswith('config.') and config is not None:
    try:
      current = config
      for part in name.split('.')[1:]:
        current = current[part]
    except (KeyError, TypeError, IndexError):
      return f'--{name}={value}: {reason}'
    return (f'--{name}={value} is not a valid {type(current).__name__} '
            f'({name[len("config."):]} is {current!r} in this config)')
  if name == 'mode':
    close = difflib.get_close_matches(value, _MODES, 1)
    hint = f'; did you mean --mode={close[0]}?' if close else ''
    return f'--mode={value}: the modes are {", ".join(_MODES)}{hint}'
  return f'--{name}={value}: {reason}'


def _config_arg(argv):
  """(index, prefix, value) of the last --config=VALUE ('--config=') or --config
  VALUE ('') in argv; (None, None, None) without one."""
  found = None, None, None
  for i, a in enumerate(argv[1:], 1):
    m = re.match(r'^(--?config)(=|$)', a)
    if m and m.group(2):
      found = i, m.group(1) + '=', a[m.end():]
    elif m:
      if i + 1 == len(argv):
        _exit('--config needs a value: a config file or name, then :VARIANT', 2)
      found = i + 1, '', argv[i + 1]
  return found


def _innermost(e):
  while e.args and isinstance(e.args[0], BaseException):
    e = e.args[0]
  return ' '.join(str(e.args[0] if e.args else e).replace('"', "'").split())


def _prog(argv0):
  base = os.path.basename(argv0)
  if base == '__main__.py':
    return 'python -m genjax'
  return f'python {argv0}' if base.endswith('.py') else base


def _exit(message, code):
  print(f'genjax: {" ".join(str(message).split())}', file=sys.stderr, flush=True)
  sys.exit(code)
