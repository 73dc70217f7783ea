"""The colab/ notebooks run top to bottom (at their smoke budgets), and their
first cell installs genjax where a fresh runtime has only jax."""
import glob
import os
import shutil
import socket
import subprocess
import sys
import types

import nbformat
import pytest
from nbclient import NotebookClient

from genjax import notebook
from genjax.families import REGISTRY

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


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
  monkeypatch.setenv('GENJAX_NOTEBOOK_SMOKE', '1')
  monkeypatch.setenv('GENJAX_NOTEBOOK_WORKDIR', str(tmp_path))
  monkeypatch.setenv('XLA_FLAGS', '')  # one device, as a Colab CPU runtime has
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


@pytest.mark.skipif(not _pypi_reachable(), reason='installs packages from pypi.org, not reachable')
def test_first_cell_installs_genjax_beside_a_preinstalled_jax(tmp_path):
  """A fresh Colab runtime: a virtualenv with only jax, genjax given by a git URL
  (a file:// clone of this repository's HEAD stands in for the real one)."""
  cells = {_first_cell(p) for p in NOTEBOOKS}
  assert len(cells) == 1, 'every notebook starts with the same install cell'
  import jax  # pylint: disable=g-import-not-at-top
  venv, repo = tmp_path / 'venv', tmp_path / 'repo'
  subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
  python = str(venv / 'bin' / 'python')
  pip = [python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check']
  subprocess.run(pip + [f'jax=={jax.__version__}'], check=True, timeout=600)
  subprocess.run(['git', 'clone', '-q', ROOT, str(repo)], check=True)
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
  env['GENJAX_REPO'] = f'file://{repo}'
  check = ("\nimport jax; from genjax.experiments import diffusion; from genjax import notebook\n"
           "print('jax', jax.__version__, diffusion.get_config('digits').family)")
  out = subprocess.run([python, '-c', cells.pop() + check], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'jax {jax.__version__} diffusion' in out.stdout  # jax kept, configs importable
  assert str(venv) in out.stdout  # genjax came from the install, not from this checkout
