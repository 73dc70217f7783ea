"""Every command that the README, a config or script docstring, or bench/ shows
runs as written, with tiny settings: experiments get ',smoke' after their
variant, workdirs move under a temporary folder, bench scripts get --smoke.
Commands for datasets that need internet must stop at the one-sentence
'not prepared' error (this machine prepares nothing from the network).

Commands that share a workdir form a chain, run in the order they are
documented (a --mode=sample command finds the checkpoint its training command
wrote). Each command is a test of its own; a chain's tests run on one worker,
in one folder, and a test first runs what precedes it in its chain where that
has not run yet. They run in this interpreter's environment: in CI that is the
README's fresh virtualenv, with no PYTHONPATH.
"""
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from genjax.data.pipeline import OFFLINE
from tests.flags import ONE_DEVICE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A command runs to the end of the line or a shell separator; quoted text may hold ';'.
COMMAND = re.compile(r"python3? (?:launch\.py|-m genjax\.[\w.]+|bench/\w+\.py)(?:'[^'\n]*'|[^\n`&|;)'])*")
DOCUMENTED = ['README.md', 'launch.py', 'bench/README.md', 'experiments/*.py', 'bench/*.py',
              'genjax/report.py', 'genjax/data/prepare.py', 'genjax/completion.py']


def documented_commands():
  commands = []
  for pattern in DOCUMENTED:
    for path in sorted(glob.glob(os.path.join(ROOT, pattern))):
      text = open(path).read().replace('\\\n', ' ')  # shell line continuations
      for cmd in COMMAND.findall(text):
        cmd = ' '.join(cmd.split()).split(' #')[0].strip().rstrip('.,:')
        if re.search(r'\.\.\.|<|\[|\b[A-Z]{3,}\b', cmd) or cmd in commands:
          continue  # a pattern (NAME, WORKDIR, [options]), not a command
        commands.append(cmd)
  return commands


def tiny(cmd, tmp):
  """(argv, needs_internet) for a documented command shrunk to run in seconds."""
  args = shlex.split(cmd)[1:]
  out, internet = [sys.executable], False
  if args[0] == 'launch.py' and not any(a.startswith('--config=') for a in args):
    args.append('--config=' + re.search(r"DEFAULT_CONFIG = '(.*)'", open(os.path.join(ROOT, 'launch.py')).read())[1])
  if args[0] == 'launch.py' and not any(a.startswith('--workdir=') for a in args):
    args.append('--workdir=workdirs/default')
  for a in args:
    if a.startswith('--config=') and ':' in a:
      path, variant = a[len('--config='):].split(':')
      a = f'--config={path}:{variant},smoke'
      internet |= _needs_internet(path, variant)
    elif a.startswith('--config.data.name='):
      internet |= a.split('=', 1)[1].split('/')[0] not in OFFLINE
    elif a.startswith('--workdir='):
      a = '--workdir=' + _under(tmp, a.split('=', 1)[1])
    elif a.startswith('/tmp/'):
      a = _under(tmp, a)
    out.append(a)
  if args[0].startswith('bench/'):
    if '--smoke' not in out:
      out.append('--smoke')
    if "'--workdir'" in open(os.path.join(ROOT, args[0])).read() and not any(
        a.startswith('--workdir=') for a in args):
      out.append(f'--workdir={tmp}/bench')  # never a default that a user's own run may hold
  if args[0] == '-m' and args[1] == 'genjax.completion' and '--smoke' not in out:
    out.append('--smoke')  # the comparison's smoke models (it trains them where missing)
  if args[0] == '-m' and args[1] == 'genjax.data.prepare':
    internet |= any(a.split('/')[0] not in OFFLINE for a in args[2:] if not a.startswith('-'))
  if internet and args[0] == 'launch.py':
    out += ['--config.data.download=False', f'--config.data.data_dir={tmp}/no_data']
  return out, internet


def _under(tmp, path):
  """/tmp/a/b -> TMP/a/b (a run inside another's workdir stays inside it);
  any other path -> TMP/<its last part>."""
  path = path.rstrip('/')
  return os.path.join(tmp, os.path.relpath(path, '/tmp') if path.startswith('/tmp/') else
                      os.path.basename(path))


def _config(path, variant):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('cfg', os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def _needs_internet(path, variant):
  config = _config(path, variant)
  name = config.dataset if config.family == 'compare' else config.data.name  # compare: one for all
  return name.split('/')[0] not in OFFLINE


def _run(argv):
  """What a shrunk command runs: its arguments but the workdir, with a config
  file's variant replaced by the config it resolves to (two variants whose
  smoke configs are equal are one run)."""
  out = []
  for a in argv:
    if a.startswith('--workdir='):
      continue
    if a.startswith('--config=') and ':' in a:
      a = '--config=' + _config(*a[len('--config='):].split(':')).to_json(sort_keys=True)
    out.append(a)
  return tuple(out)


def test_the_documented_commands_are_found():
  commands = documented_commands()
  assert any(c.startswith('python launch.py --config=experiments/autoregressive.py:digits')
             for c in commands)
  assert 'python bench/ar_step.py --torch' in commands
  # Every benchmark shows its command, so its smoke mode runs here and cannot rot.
  # (A module without a __main__ block is what the scripts import.)
  scripts = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'bench', '*.py'))
             if "if __name__ == '__main__':" in open(p).read()}
  shown = {c.split()[1] for c in commands if c.split()[1].startswith('bench/')}
  assert 'bench/families.py' in scripts and scripts <= shown, scripts - shown


def chain(cmd):
  """Commands that share a workdir build on each other (train, then sample, eval,
  report): they form one chain, run in the documented order in one test."""
  paths = re.findall(r'(?:--workdir=|\s)/tmp/([\w.-]+)', cmd)
  return paths[0] if paths else cmd


def chains():
  """Each documented run once: a command that repeats an earlier run in another
  workdir (`python launch.py` is the digits comparison; `:digits_full,smoke` is
  `:digits,smoke`) is dropped, unless later
  commands build on its workdir; then the chain keeps it and drops the earlier
  one, if that one stood alone."""
  out, first = {}, {}  # chain -> commands; run -> the chain that runs it
  for cmd in documented_commands():
    run = _run(tiny(cmd, '')[0])
    key = chain(cmd)
    if run in first and key not in out:
      out[key] = [cmd]  # kept only if a later command joins this chain
      continue
    first.setdefault(run, key)
    out.setdefault(key, []).append(cmd)
  for key, cmds in list(out.items()):
    run = _run(tiny(cmds[0], '')[0])
    if first.get(run) != key:  # a repeated run
      if len(cmds) == 1:
        del out[key]
      elif len(out.get(first[run], ())) == 1:
        del out[first[run]]
        first[run] = key
  return out


def run_group(cmd):
  """'family:variant' of the experiment a command runs: its xdist group, which a
  notebook running the same experiment joins (tests/test_notebooks.py), so that
  the second of them reads the first one's compiles from the cache."""
  found = re.search(r'--config=experiments/(\w+)\.py:(\w+)', cmd)
  return f'{found[1]}:{found[2]}' if found else cmd


def steps():
  """(chain, its commands up to this one) for every documented command, with the
  test id: the chain's name, with '-1', '-2', ... after it for its later commands."""
  out = []
  for key, cmds in chains().items():
    for k in range(len(cmds)):
      out.append(pytest.param(key, cmds[:k + 1], id=key if k == 0 else f'{key}-{k}',
                              marks=pytest.mark.xdist_group(run_group(cmds[0]))))
  return out


_CHAINS = {}  # chain -> its folder, how many of its commands ran, the one that failed


@pytest.mark.parametrize('key, cmds', steps())
def test_documented_commands_run(key, cmds, tmp_path_factory):
  if key not in _CHAINS:
    _CHAINS[key] = {'folder': str(tmp_path_factory.mktemp('chain')), 'ran': 0, 'failed': None}
  chain = _CHAINS[key]
  for cmd in cmds[chain['ran']:]:
    if chain['failed']:
      pytest.fail(f'an earlier command of this chain failed: {chain["failed"]}')
    try:
      _run_documented(cmd, chain['folder'])
    except pytest.skip.Exception:
      if cmd == cmds[-1]:
        chain['ran'] += 1
        raise
    except BaseException:
      chain['failed'] = cmd
      raise
    chain['ran'] += 1


def _run_documented(cmd, tmp):
  argv, internet = tiny(cmd, tmp)
  if internet and 'genjax.data.prepare' in argv:
    pytest.skip('prepares a dataset from the internet')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['XLA_FLAGS'] = ONE_DEVICE  # one device, as a user's laptop has
  out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  if internet:
    assert out.returncode != 0, f'{cmd}: ran without its dataset'
    last = out.stderr.strip().splitlines()[-1]
    assert 'is not prepared' in last and 'Traceback' not in out.stderr, out.stderr[-2000:]
  else:
    assert out.returncode == 0, f'{" ".join(argv)}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}'
