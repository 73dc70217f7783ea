"""The genjax command (launch.py, `python -m genjax`, the `genjax` script): every
bad input is one line and writes nothing, Ctrl-C saves and says where, and an
installed genjax finds its configs from any directory with no top-level
`experiments` package. The package metadata declares runtime dependencies only.

The commands run as a user runs them: no PYTHONPATH, one device (XLA_FLAGS='').
"""
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

from packaging.requirements import Requirement
from packaging.version import Version
import pytest

from genjax import cli, run, writers
from tests.flags import ONE_DEVICE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAE = '--config=experiments/vae.py:digits,smoke'
AR = '--config=experiments/autoregressive.py:digits,smoke'
TOOLS = {'pytest', 'pytest-xdist', 'hypothesis', 'nbclient', 'nbformat', 'ipykernel', 'torch'}


def _env():
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['XLA_FLAGS'] = ONE_DEVICE
  return env


def _launch(*args, cwd=ROOT, timeout=300):
  return subprocess.run([sys.executable, os.path.join(ROOT, 'launch.py'), *args], cwd=cwd,
                        env=_env(), capture_output=True, text=True, timeout=timeout)


def _one_line(out):
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('genjax: '), out.stderr[-3000:]
  return lines[0]


BAD = {  # id: (arguments, exit status, what the line says)
    'unknown variant': (['--config=experiments/vae.py:digitz'], 2,
                        "unknown variant 'digitz' of experiments/vae.py; did you mean 'digits'?"),
    'misspelt smoke': (['--config=experiments/vae.py:digits,smok'], 2,
                       "unknown suffix ',smok' after the variant; the one suffix is ',smoke'"),
    'missing config file': (['--config=experiments/vea.py:digits'], 2,
                            'no config file experiments/vea.py'),
    'unknown config name': (['--config=vea:digits'], 2, 'did you mean --config=vae:digits?'),
    'unknown mode': ([VAE, '--mode=smaple'], 2, 'did you mean --mode=sample?'),
    'not an integer': ([VAE, '--config.train.num_steps=abc'], 2,
                       '--config.train.num_steps=abc is not a valid int'),
    'misspelt nested field': (
        [VAE, '--config.model.latnet_dim=3'], 2,
        'the config has no field \'model.latnet_dim\'; Did you mean "model.latent_dim" instead '
        'of "model.latnet_dim"?'),
    'field in another block': ([VAE, '--config.train.lr=3e-4'], 2, 'Did you mean "optim.lr"'),
    'unknown flag': ([VAE, '--wrkdir=/tmp/x'], 2, 'unknown flag --wrkdir; did you mean --workdir?'),
    'stray argument': ([VAE, 'digits'], 2, "unexpected arguments ['digits']"),
    'sample before training': ([VAE, '--mode=sample'], 1, 'no checkpoint in'),
    'eval before training': ([VAE, '--mode=eval'], 1, 'no checkpoint in'),
}


@pytest.mark.parametrize('name', list(BAD))
def test_a_bad_input_is_one_line_and_writes_nothing(name, tmp_path):
  args, status, says = BAD[name]
  workdir = tmp_path / 'w'
  out = _launch(*args, f'--workdir={workdir}')
  assert out.returncode == status, out.stderr[-3000:]
  line = _one_line(out)
  assert says in line and '\\' not in line, line
  assert not workdir.exists()


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
  path = tmp_path / 'notes.txt'
  path.write_text('mine')
  for workdir in (path, path / 'run'):
    out = _launch(VAE, f'--workdir={workdir}')
    assert out.returncode == 1
    assert 'is a file' in _one_line(out) or 'is under a file' in _one_line(out)
  assert os.listdir(tmp_path) == ['notes.txt'] and path.read_text() == 'mine'


def test_ctrl_c_saves_the_step_and_samples_keep_their_settings(tmp_path):
  """Ctrl-C mid-training: one line with the saved step and how to resume, exit 130.
  Then two --mode=sample runs with other sampler settings write two titled files."""
  workdir = tmp_path / 'w'
  common = [AR, f'--workdir={workdir}']
  # A suite started in the background (`nohup ... &`) ignores SIGINT, and so would the child.
  proc = subprocess.Popen(
      [sys.executable, 'launch.py', *common, '--config.train.num_steps=100000'], cwd=ROOT,
      env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  try:
    metrics, t0 = workdir / 'metrics.jsonl', time.time()
    while not (metrics.exists() and '"train"' in metrics.read_text()):
      assert proc.poll() is None and time.time() - t0 < 400, proc.communicate()
      time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
  finally:
    proc.kill()  # a failed wait leaves no training process behind
  assert proc.returncode == 130, stderr[-3000:]
  said = [line for line in stdout.splitlines() if 'saved step' in line]
  assert len(said) == 1, stdout
  step = int(re.fullmatch(r'stopped by SIGINT: saved step (\d+) in .+; the same command resumes',
                          said[0])[1])
  assert 'Traceback' not in stderr and 'KeyboardInterrupt' not in stderr, stderr[-3000:]
  assert str(step) in os.listdir(workdir / 'checkpoints')

  for temperature in ('0.5', '1'):
    out = _launch(*common, '--mode=sample', f'--config.sample.temperature={temperature}')
    assert out.returncode == 0, out.stderr[-3000:]
  names = sorted(os.listdir(workdir / 'samples'))
  assert names == [f'sample_step_{step:07d}_length=20,num_samples=4,prompt=def_,'
                   f'temperature={t},top_k=0,top_p=1.png' for t in ('0.5', '1')], names
  from PIL import Image  # pylint: disable=g-import-not-at-top
  height = Image.open(workdir / 'samples' / names[0]).size[1]
  assert height > 2 * (8 + 1) * 4 + 4  # the grid of 4 digits, and a title band above it


def test_ctrl_c_goes_to_the_trainer_while_it_trains_and_interrupts_elsewhere():
  asked = []
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: asked.append(signum))
  try:
    ctrl_c = cli._CtrlC()  # pylint: disable=protected-access
    ctrl_c(signal.SIGINT, None)
    assert asked == [signal.SIGINT]
    with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
      ctrl_c(signal.SIGINT, None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not training
    with pytest.raises(KeyboardInterrupt):
      cli._CtrlC()(signal.SIGINT, None)  # pylint: disable=protected-access
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_sample_file_names_carry_the_settings():
  settings = writers.sampler_settings({'temperature': 0.7, 'top_k': 0, 'prompt': 'def ',
                                       'figure_temperatures': (0.5, 1.0), 'num_samples': 8})
  assert list(settings) == ['num_samples', 'prompt', 'temperature', 'top_k']
  name = run.sample_name(12, settings)
  assert name == 'sample_step_0000012_num_samples=8,prompt=def_,temperature=0.7,top_k=0'
  assert run.sample_name(12, {**settings, 'temperature': 1.0}) != name
  long = writers.settings_name({'prompt': 'a/b' * 40})
  assert re.fullmatch(r'prompt=a_ba_ba_ba_ba_ba~[0-9a-f]{8}', long), long


def _packaged(tmp_path):
  """What `pip install .` would install, built offline with this interpreter's
  setuptools: (its metadata directory, the tree of its modules)."""
  src = _mkdir(tmp_path / 'src')
  for name in ('pyproject.toml', 'README.md', 'LICENSE'):
    shutil.copy(os.path.join(ROOT, name), src / name)
  for name in ('genjax', 'experiments'):
    shutil.copytree(os.path.join(ROOT, name), src / name,
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
  out = subprocess.run(
      [sys.executable, '-c', 'from setuptools import setup; setup()', '-q', 'egg_info',
       '--egg-base', str(tmp_path), 'build_py', '--build-lib', str(tmp_path / 'lib')],
      cwd=src, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return tmp_path / 'genjax_families.egg-info', tmp_path / 'lib'


def _mkdir(path):
  path.mkdir()
  return path


def test_the_package_declares_runtime_dependencies_only_and_ships_the_configs(tmp_path):
  meta, lib = _packaged(tmp_path)
  dist = importlib.metadata.PathDistribution(meta)
  requires = [Requirement(r) for r in dist.requires]
  runtime = [r for r in requires if r.marker is None or 'extra' not in str(r.marker)]
  assert {r.name for r in runtime} & TOOLS == set(), runtime
  extras = {e: {r.name for r in requires if r.marker and r.marker.evaluate({'extra': e})}
            for e in dist.metadata.get_all('Provides-Extra')}
  assert {'pytest', 'pytest-xdist', 'hypothesis', 'nbclient', 'ipykernel'} <= extras['test']
  assert extras['bench'] == {'torch'} and extras['cuda'] == extras['tpu'] == {'jax'}
  assert extras['wandb'] == {'wandb'} and 'wandb' in extras['test']
  assert dist.metadata['Requires-Python'] == '>=3.11'
  assert 'genjax = genjax.cli:main' in dist.read_text('entry_points.txt')
  # This suite runs with every declared dependency at or above its lower bound.
  for r in runtime:
    bound = next(Version(s.version) for s in r.specifier if s.operator == '>=')
    assert Version(importlib.metadata.version(r.name)) >= bound, r
  # Every module of genjax/, and the configs inside it, not as a top-level package.
  modules = {os.path.relpath(os.path.join(d, f), ROOT) for d, _, files in os.walk(
      os.path.join(ROOT, 'genjax')) for f in files if f.endswith('.py')}
  assert {m for m in modules if not (lib / m).exists()} == set()
  configs = {f for f in os.listdir(os.path.join(ROOT, 'experiments')) if f.endswith('.py')}
  assert configs <= set(os.listdir(lib / 'genjax' / 'experiments'))
  assert sorted(os.listdir(lib)) == ['genjax']


def test_an_installed_genjax_finds_its_configs_from_any_directory(tmp_path):
  """The installed tree alone on the path (python -S: no .pth file, so no editable
  install of this checkout either), run from an empty directory."""
  _, lib = _packaged(tmp_path)
  cwd = _mkdir(tmp_path / 'elsewhere')
  paths = dict.fromkeys([str(lib), sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']])
  env = {**_env(), 'PYTHONPATH': os.pathsep.join(paths)}

  def genjax(*args):
    return subprocess.run([sys.executable, '-S', '-m', 'genjax', *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)

  where = subprocess.run(
      [sys.executable, '-S', '-c', 'import genjax.configs as c; print(c.config_dir())'],
      cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
  assert where.stdout.strip() == str(lib / 'genjax' / 'experiments'), where.stderr[-3000:]
  out = genjax('--config=vae:digits,smoke', f'--workdir={cwd / "w"}', '--mode=sample')
  assert out.returncode == 1 and 'no checkpoint in' in _one_line(out)  # the config loaded
  out = genjax(f'--config={ROOT}/experiments/autoregressive.py:digits,smoke',
               f'--workdir={cwd / "w"}')
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'final: {' in out.stdout and os.listdir(cwd / 'w' / 'checkpoints')
