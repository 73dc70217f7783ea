"""What the colab/ notebooks call, so that they hold no model code of their own.

  config('FAMILY:VARIANT', steps=600)     the experiment config at a notebook's budget
  ex = train(config, workdir('NAME'))     trains (or resumes): a `Trained` (state, final, ...)
  show(figure), show_figures(figures)     a family's figures inline
  curves(ex.workdir, 'train', ['loss'])
  use_drive(True)                         the workdirs in Google Drive (Colab)

With GENJAX_NOTEBOOK_SMOKE=1 in the environment (the test suite sets it), every
config is its variant's ',smoke' config, so a notebook runs top to bottom in
seconds. The workdirs go under GENJAX_NOTEBOOK_WORKDIR if it is set, else in
Google Drive after use_drive() (the notebooks' DRIVE knob), else under the
system's temporary directory.
"""
import dataclasses
import importlib
import os
import tempfile
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from genjax import report, run, sweep, train as trainer, writers

SMOKE_ENV = 'GENJAX_NOTEBOOK_SMOKE'
WORKDIR_ENV = 'GENJAX_NOTEBOOK_WORKDIR'
DRIVE_MOUNT = '/content/drive'  # where Colab mounts Google Drive
DRIVE_FOLDER = os.path.join('MyDrive', 'genjax')  # the workdirs' folder inside it
_drive_root = None  # set by use_drive()


def smoke():
  return os.environ.get(SMOKE_ENV, '') not in ('', '0')


def config(name, steps=None, overrides='', evals=None):
  """'family:variant' -> experiments/<family>.py's config, trained for `steps`
  (None: the config's own length) with 'a.b=1;c=2' overrides applied; `evals`
  names the evaluators to keep (None: all of the config's)."""
  module, _, variant = name.partition(':')
  get_config = importlib.import_module(f'genjax.experiments.{module}').get_config
  c = get_config((variant or 'digits') + (',smoke' if smoke() else ''))
  if steps and not smoke():
    c.train.num_steps = steps
  if overrides:
    c = sweep.apply(c, sweep.parse(overrides, 'notebook overrides')[0], 'notebook overrides')
  if evals is not None:
    unknown = set(evals) - set(c.evals)
    if unknown:
      raise ValueError(f'{name} has no evaluators {sorted(unknown)}; it has {sorted(c.evals)}')
    for key in set(c.evals) - set(evals):
      del c.evals[key]
  return c


def use_drive(enabled=True):
  """With `enabled`, mounts Google Drive (in Colab) and puts the workdirs in its
  MyDrive/genjax, so that a disconnected runtime loses no checkpoint. Outside
  Colab it says so in one line, and the workdirs stay under the default.
  GENJAX_NOTEBOOK_WORKDIR, where it is set, wins over both."""
  global _drive_root
  _drive_root = None
  if not enabled or os.environ.get(WORKDIR_ENV):  # the environment's workdir wins
    return
  try:
    from google.colab import drive  # pylint: disable=g-import-not-at-top
  except ImportError:
    print(f'DRIVE needs Colab (google.colab is not importable here), so the workdirs '
          f'stay under {_root()}.')
    return
  drive.mount(DRIVE_MOUNT)
  _drive_root = os.path.join(DRIVE_MOUNT, DRIVE_FOLDER)


def _root():
  return (os.environ.get(WORKDIR_ENV) or _drive_root
          or os.path.join(tempfile.gettempdir(), 'genjax_colab'))


def workdir(name):
  """A workdir per notebook run: re-running a cell resumes instead of retraining."""
  return os.path.join(_root(), name + ('_smoke' if smoke() else ''))


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained model as a notebook uses it: the family's functions and tools,
  its dataset, its final (or selected) state, each evaluator's final metrics."""
  family: Any
  data: Any
  config: Any
  workdir: str
  state: Any
  final: dict


def train(config, workdir):
  """Trains to config.train.num_steps (resuming what the workdir holds)."""
  ex = run.experiment(config, workdir)
  result = trainer.train_and_evaluate(ex)
  return Trained(ex.family, ex.data, config, workdir, result.state, result.metrics)


def show(figure, title=None, ax=None, scale=4):
  """A figure dict of a family's tools['figures'] ({'images', 'value_range', ...}
  or {'rgb'}), drawn with matplotlib."""
  if 'rgb' in figure:
    grid = np.asarray(figure['rgb'])
  else:
    kwargs = {k: figure[k] for k in ('rows_of', 'cols') if figure.get(k) is not None}
    grid = writers.image_grid(figure['images'], figure['value_range'], scale=scale, **kwargs)
  if ax is None:
    _, ax = plt.subplots(figsize=(min(14, 0.5 + grid.shape[1] / 80),
                                  min(14, 0.5 + grid.shape[0] / 80)))
  # One grey scale for every figure: image_grid maps the data's value range to
  # 0..255, so these limits are that range, not this grid's own min and max.
  ax.imshow(grid.squeeze(), cmap='gray', interpolation='nearest', vmin=0, vmax=255)
  ax.set_axis_off()
  if title:
    ax.set_title(title)
  return ax


def show_figures(figures):
  for name, fig in figures.items():
    show(fig, title=name)
    plt.show()


def curves(workdir, split, metrics, ax=None):
  """The logged values of `metrics` in `split` ('train', 'validation', ...) against the step."""
  rows = report.eval_curve(workdir, split, tuple(metrics))
  if ax is None:
    _, ax = plt.subplots(figsize=(6, 3.5))
  steps = [r[0] for r in rows]
  for i, metric in enumerate(metrics):
    ax.plot(steps, [r[2][i] for r in rows], label=metric)
  ax.set_xlabel('step')
  ax.legend()
  return ax
