"""The colab/ notebooks run top to bottom (at their smoke budgets), and their
first cell installs genjax where a fresh runtime has only jax and numpy, keeping
those as they are."""
import ast
import glob
import os
import re
import socket
import subprocess
import sys
import tomllib
import types

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from packaging.requirements import Requirement

from genjax import notebook
from genjax.families import REGISTRY
from tests.flags import ONE_DEVICE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, 'colab', '*.ipynb')))


def expected_notebooks():
  """A notebook per registered family, and the comparison's."""
  return set(REGISTRY) | {'compare'}


def test_every_family_and_the_comparison_has_a_notebook():
  names = {os.path.basename(p)[:-len('.ipynb')] for p in NOTEBOOKS}
  assert names == expected_notebooks()


def test_notebooks_are_stored_without_outputs():
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == 'code' and (c.outputs or c.execution_count)]
    assert not dirty, f'{path}: cells {dirty} hold outputs; clear them before committing'


def run_group(path):
  """'family:variant' of the notebook's first experiment: the xdist group of the
  documented command that runs it (tests/test_docs_commands.py)."""
  found = re.search(r"notebook\.config\('(\w+:\w+)'", open(path).read())
  return found[1] if found else path


@pytest.mark.parametrize('path', [pytest.param(p, marks=pytest.mark.xdist_group(run_group(p)))
                                  for p in NOTEBOOKS], ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
  monkeypatch.setenv('GENJAX_NOTEBOOK_SMOKE', '1')
  monkeypatch.setenv('GENJAX_NOTEBOOK_WORKDIR', str(tmp_path))
  monkeypatch.setenv('XLA_FLAGS', ONE_DEVICE)  # one device, as a Colab CPU runtime has
  monkeypatch.delenv('PYTHONPATH', raising=False)
  nb = nbformat.read(path, as_version=4)
  # Raises CellExecutionError, with the cell and its traceback, on any error.
  NotebookClient(nb, timeout=600, kernel_name='python3',
                 resources={'metadata': {'path': str(tmp_path)}}).execute()
  images = sum('image/png' in o.get('data', {}) for c in nb.cells if c.cell_type == 'code'
               for o in c.outputs)
  assert images >= 1, f'{path} drew no figure'


def test_drive_holds_the_workdirs_in_colab_and_is_one_sentence_elsewhere(
    tmp_path, monkeypatch, capsys):
  monkeypatch.delenv(notebook.WORKDIR_ENV, raising=False)
  monkeypatch.delenv(notebook.SMOKE_ENV, raising=False)
  monkeypatch.setattr(notebook, '_drive_root', None)  # restored after the test
  default = notebook.workdir('vae')
  monkeypatch.setitem(sys.modules, 'google.colab', None)  # not importable: not Colab
  notebook.use_drive(True)
  out = capsys.readouterr().out
  assert out.count('\n') == 1 and 'needs Colab' in out, out
  assert notebook.workdir('vae') == default
  mounted = []  # Colab: a stand-in for google.colab.drive
  monkeypatch.setitem(sys.modules, 'google.colab',
                      types.SimpleNamespace(drive=types.SimpleNamespace(mount=mounted.append)))
  monkeypatch.setattr(notebook, 'DRIVE_MOUNT', str(tmp_path / 'drive'))
  notebook.use_drive(True)
  assert mounted == [str(tmp_path / 'drive')]
  assert notebook.workdir('vae') == str(tmp_path / 'drive' / 'MyDrive' / 'genjax' / 'vae')
  monkeypatch.setenv(notebook.WORKDIR_ENV, str(tmp_path / 'env'))  # the environment's wins
  assert notebook.workdir('vae') == str(tmp_path / 'env' / 'vae')
  notebook.use_drive(False)
  monkeypatch.delenv(notebook.WORKDIR_ENV)
  assert notebook.workdir('vae') == default


def _pypi_reachable():
  try:
    socket.create_connection(('pypi.org', 443), timeout=3).close()
    return True
  except OSError:
    return False


def _first_cell(path):
  return next(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == 'code')


def _first_cell_functions():
  """The first cell's imports, knobs and functions, without its install."""
  tree = ast.parse(_first_cell(NOTEBOOKS[0]))
  body = [node for node in tree.body if not isinstance(node, ast.If)]
  namespace = {}
  exec(compile(ast.Module(body, []), 'first cell', 'exec'), namespace)  # pylint: disable=exec-used
  return namespace


def test_first_cell_takes_the_url_with_or_without_git_plus():
  pip_url = _first_cell_functions()['pip_url']
  url = 'https://github.com/owner/repo'
  assert pip_url(url) == pip_url(f'git+{url}') == pip_url(f' {url}\n') == f'git+{url}'


def test_first_cell_sees_a_new_version_of_what_the_kernel_imported():
  cell = _first_cell_functions()
  before = cell['imported_versions']()
  assert before['numpy'] == np.__version__ and before['pytest'] == pytest.__version__
  assert cell['changed'](before) == []
  assert cell['changed']({**before, 'numpy': '1.0.0'}) == ['numpy']
  assert cell['changed']({'not-installed-here': '1.0.0'}) == ['not-installed-here']
  assert cell['versions'](['numpy', 'not-installed-here']) == {
      'numpy': np.__version__, 'not-installed-here': None}


def _declared_minimum(name):
  """The lower bound of `name` in pyproject.toml's [project] dependencies."""
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    requirements = [Requirement(r) for r in tomllib.load(f)['project']['dependencies']]
  return next(s.version for r in requirements if r.name == name
              for s in r.specifier if s.operator == '>=')


@pytest.mark.skipif(not _pypi_reachable(), reason='installs packages from pypi.org, not reachable')
def test_first_cell_installs_genjax_beside_a_preinstalled_jax(tmp_path):
  """A fresh Colab runtime: a virtualenv with jax and numpy at the oldest versions
  pyproject.toml allows; genjax given by a git URL, without and with git+ (a
  file:// clone of this repository's HEAD stands in for the real one)."""
  cells = {_first_cell(p) for p in NOTEBOOKS}
  assert len(cells) == 1, 'every notebook starts with the same install cell'
  cell = cells.pop()
  # Nothing of this checkout on the path: every process sees the venv alone.
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
  python = str(venv / 'bin' / 'python')

  def pip(*args):
    subprocess.run([python, '-m', 'pip', '-q', '--disable-pip-version-check', *args], env=env,
                   check=True, timeout=600)

  minimums = [f'{n}=={_declared_minimum(n)}' for n in ('jax', 'numpy')]
  # An absl-py older than genjax needs, imported before the install: a restart is due.
  pip('install', *minimums, f'absl-py<{_declared_minimum("absl-py")}')
  repo = tmp_path / 'repo'
  subprocess.run(['git', 'clone', '-q', ROOT, str(repo)], check=True)

  def run(code, repo_url=''):
    return subprocess.run([python, '-c', code], cwd=tmp_path, env={**env, 'GENJAX_REPO': repo_url},
                          capture_output=True, text=True, timeout=900)

  pinned = ("import importlib.metadata as m\n"
            "print('pinned', *(f'{n}=={m.version(n)}' for n in ('jax', 'jaxlib', 'numpy')))\n")
  before = run(pinned).stdout
  assert all(v in before for v in minimums), before
  out = run('import absl\n' + cell, f'file://{repo}')
  assert out.returncode == 0, out.stderr[-3000:]
  restart = [line for line in out.stdout.splitlines() if 'Restart the runtime' in line]
  assert len(restart) == 1 and 'absl-py' in restart[0], out.stdout
  check = pinned + ("import genjax; from genjax.experiments import diffusion\n"
                    "print(diffusion.get_config('digits').family, genjax.__file__)")
  out = run(check)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.startswith(before) and f'diffusion {venv}' in out.stdout, out.stdout

  # The same with git+ in front, in the same runtime: nothing it imported changes.
  pip('uninstall', '-y', 'genjax-families')
  out = run(cell + '\n' + check, f'git+file://{repo}')
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Restart' not in out.stdout and f'genjax from {venv}' in out.stdout, out.stdout
  assert before in out.stdout and f'diffusion {venv}' in out.stdout, out.stdout

  # A genjax that needs a newer jax than the runtime has: pip stops, and says so.
  pip('uninstall', '-y', 'genjax-families')
  pyproject, needs = repo / 'pyproject.toml', f'"jax>={_declared_minimum("jax")}"'
  assert needs in pyproject.read_text()
  pyproject.write_text(pyproject.read_text().replace(needs, '"jax>=99"'))
  subprocess.run(['git', '-C', str(repo), '-c', 'user.name=t', '-c', 'user.email=t@t',
                  'commit', '-qam', 'needs jax 99'], check=True)
  out = run(cell, f'file://{repo}')
  assert out.returncode != 0
  assert f'this runtime has {minimums[0]}' in out.stderr, out.stderr[-3000:]
  assert 'older than genjax needs' in out.stderr, out.stderr[-3000:]
