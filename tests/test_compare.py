"""The comparison harness and sweeps."""
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from genjax import compare, compare_report, sweep
from genjax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _SlowFirstCall:
  """A family whose first sample call pays a 'compile' of 0.5 s."""

  def __init__(self):
    self.calls = 0

  def sample(self, state, rng, num):
    del state
    self.calls += 1
    time.sleep(0.5 if self.calls == 1 else 0.01)
    return {'x': np.full((num, 2), float(rng[-1]))}


def test_sample_speed_leaves_out_compilation_and_the_measured_samples_are_the_first():
  family = _SlowFirstCall()
  rng = np.array([0, 7], np.uint32)
  samples, per_s, _ = compare.draw(family.sample, None, 100, rng, timing_batch=100)
  # With the 0.5 s first call counted, 100 samples would take at least 0.5 s:
  # at most 200/s. Without it they take about 10 ms, whatever the machine's load.
  assert per_s > 100 / 0.4
  assert samples['x'].shape == (100, 2) and np.all(samples['x'] == 7)
  # Timed on a smaller batch: its first call stands for the compilation.
  family = _SlowFirstCall()
  family.calls = -1  # the second call (the first of the timing batch) is the slow one
  samples, per_s, compile_s = compare.draw(family.sample, None, 100, rng, timing_batch=10)
  assert samples['x'].shape == (100, 2) and per_s > 10 / 0.4
  assert 0.4 < compile_s < 2.0  # the slow call's 0.5 s, less a fast call's


def test_sweep_settings_are_the_grid_of_the_fields():
  assert sweep.parse('optim.lr=1e-3,3e-4;seed=0,1') == [
      {'optim.lr': 1e-3, 'seed': 0}, {'optim.lr': 1e-3, 'seed': 1},
      {'optim.lr': 3e-4, 'seed': 0}, {'optim.lr': 3e-4, 'seed': 1}]
  with pytest.raises(ConfigError, match='not FIELD=VALUE'):
    sweep.parse('optim.lr')


def test_a_sweep_of_two_settings_and_two_seeds_writes_its_table(tmp_path):
  out = subprocess.run(
      [sys.executable, 'launch.py', '--config=experiments/autoregressive.py:digits,smoke',
       f'--workdir={tmp_path}', "--sweep=model.width=16,32;seed=0,1"],
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  runs = json.load(open(tmp_path / 'sweep.json'))
  assert [r['overrides'] for r in runs] == [
      {'model.width': 16, 'seed': 0}, {'model.width': 16, 'seed': 1},
      {'model.width': 32, 'seed': 0}, {'model.width': 32, 'seed': 1}]
  # Different seeds give different results, so the table's spread is real.
  assert runs[0]['metrics']['test/bpd'] != runs[1]['metrics']['test/bpd']
  table = open(tmp_path / 'sweep.md').read().splitlines()
  assert table[2].startswith('| model.width=16 | 2 |') and table[3].startswith('| model.width=32 | 2 |')
  assert ' ± ' in table[2]
  configs = [json.load(open(tmp_path / f'model.width={w},seed={s}' / 'config.json'))
             for w in (16, 32) for s in (0, 1)]
  assert [(c['model']['width'], c['seed']) for c in configs] == [(16, 0), (16, 1), (32, 0), (32, 1)]


def test_the_report_shows_the_measured_columns_intervals_and_who_is_missing():
  rows = [{'label': 'gan', 'family': 'gan', 'likelihood': 'none', 'seed': s, 'modes': m,
           'high_quality': hq, 'network_evals': 1, 'samples_per_s': 100.0}
          for s, m, hq in ((0, 25, 0.9), (1, 23, 0.7))]
  rows.append({'label': 'flow', 'family': 'flow', 'likelihood': 'exact', 'seed': 0, 'nll': -1.5,
               'nll_lo': -1.6, 'nll_hi': -1.4, 'modes': 25, 'high_quality': 0.5,
               'high_quality_lo': 0.45, 'high_quality_hi': 0.55, 'network_evals': 1,
               'samples_per_s': 50.0})
  summary = compare_report.aggregate(rows)
  assert summary['gan']['modes'] == (24.0, 1.0, 2)  # two seeds: mean and std across them
  assert summary['flow']['nll'] == pytest.approx((-1.5, 0.1, 1))  # one seed: its own interval
  report = compare_report.markdown(summary, rows, {'modes': 25, 'high_quality': 1.0},
                                   'python launch.py',
                                   missing=[('autoregressive', 'it models tokens')]).splitlines()
  header = next(line for line in report if line.startswith('| family'))
  assert 'bits/dim' not in header and 'FD' not in header  # no family measured them
  assert 'test NLL (nats)' in header and 'modes' in header and 'high quality' in header
  cells = lambda name: next(line for line in report if line.startswith(f'| {name} |')).split(' | ')
  column = header.split(' | ').index('test NLL (nats)')
  assert '24.0 ± 1.0' in cells('gan') and '0.800 ± 0.100' in cells('gan')
  assert cells('gan')[column] == 'n/a' and cells('flow')[column] == '-1.500 ± 0.100'
  assert cells(compare_report.DATA_LABEL)[header.split(' | ').index('modes')] == '25.0'
  assert '- **autoregressive** is not in the table: it models tokens.' in report
  # A diffusion run evaluated with its probability-flow ODE: that column beside the bound.
  final = {'test': {'bpd': 2.16, 'bpd_lo': 2.1, 'bpd_hi': 2.22, 'bpd_ode': 7.33, 'nll': 99.0}}
  row = {'label': 'diffusion', 'family': 'diffusion', 'likelihood': 'bound', 'seed': 0,
         **compare._likelihood(final, text=False)}  # pylint: disable=protected-access
  assert 'bpd_ode' not in compare._likelihood({'test': {'bpd': 2.1}}, text=False)  # pylint: disable=protected-access
  report = compare_report.markdown(compare_report.aggregate([row]), [row], {}, 'c').splitlines()
  split = lambda start: next(
      [c.strip() for c in line.strip('|').split('|')] for line in report if line.startswith(start))
  header, cells = split('| family'), split('| diffusion |')
  assert cells[header.index('test bits/dim')] == '2.160 ± 0.060'
  assert cells[header.index('PF-ODE bits/dim')] == '7.330'
  # Other samplers of the same model, with the metrics the rows carry.
  rows[0]['cost_points'] = [{'sampler': 'DDIM 10', 'network_evals': 10, 'samples_per_s': 9.0,
                             'modes': 20, 'high_quality': 0.25, 'high_quality_lo': 0.2,
                             'high_quality_hi': 0.3}]
  table = compare_report.cost_table(rows)
  assert '| gan | DDIM 10 | 10 | 20.0 | 0.250 ± 0.050 | 9.0 |' in table and 'FD' not in table


def _table(**rows):
  return {label: {'likelihood': 'none', 'cost_points': [], 'seeds': 1, **row}
          for label, row in rows.items()}


def test_each_claim_is_judged_on_the_numbers():
  from genjax.families import autoregressive, diffusion, flow, gan, vae  # pylint: disable=g-import-not-at-top
  single = dict(gan=dict(family='gan', network_evals=1, fd=8.0, recall=0.5, entropy=2.0,
                         roughness=0.05),
                vae=dict(family='vae', network_evals=1, fd=12.0, recall=0.8, entropy=2.2,
                         roughness=0.01, sharpness=1.3,
                         cost_points=[{'kwargs': {'decode_how': 'mean'}, 'sharpness': 0.4}]))
  slow = dict(family='diffusion', network_evals=100, fd=6.0, recall=0.9, entropy=2.2,
              roughness=0.02, sharpness=0.9,
              cost_points=[{'sampler': 'DDIM 1', 'network_evals': 1, 'fd': 30.0},
                           {'sampler': 'DDIM 10', 'network_evals': 10, 'fd': 7.5}])
  evidence, verdict = diffusion.CLAIM.judge(_table(diffusion=slow, **single), None)
  assert verdict == 'supported' and '10 network evaluations' in evidence
  fast = dict(slow, cost_points=[{'sampler': 'DDIM 1', 'network_evals': 1, 'fd': 7.0}])
  assert diffusion.CLAIM.judge(_table(diffusion=fast, **single), None)[1] == 'not supported'
  # The GAN has the lowest recall and class entropy and the roughest loss.
  assert gan.CLAIM.judge(_table(diffusion=slow, **single), None)[1] == 'supported'
  calm = dict(single['gan'], recall=0.95, entropy=2.3, roughness=0.001)
  assert gan.CLAIM.judge(_table(diffusion=slow, vae=single['vae'], gan=calm), None)[1] == \
      'not supported'
  # The VAE's means are the blurriest rows, its draws sharper than the data.
  evidence, verdict = vae.CLAIM.judge(_table(diffusion=slow, **single), None)
  assert verdict == 'partly supported' and 'decoder means 0.40' in evidence
  exact = dict(family='autoregressive', likelihood='exact', bpd=1.9, network_evals=64,
               drift=0.2, drift_lo=0.1, drift_hi=0.3)
  bound = dict(family='flow', likelihood='bound', bpd=2.1, network_evals=1)
  evidence, verdict = flow.CLAIM.judge(_table(flow=bound, autoregressive=exact), None)
  assert verdict == 'partly supported' and '+0.200 bits/dim' in evidence
  assert autoregressive.CLAIM.judge(_table(autoregressive=exact), None)[1] == 'supported'
  flat = dict(exact, drift=0.0, drift_lo=-0.1)
  assert autoregressive.CLAIM.judge(_table(autoregressive=flat), None)[1] == 'partly supported'


def _untimed(value):
  """The report's values without the times and rates (and the workdirs)."""
  if isinstance(value, dict):
    return {k: _untimed(v) for k, v in value.items()
            if k not in compare_report.TIMED + ('workdir',)}
  if isinstance(value, list):
    return [_untimed(v) for v in value]
  return value


def test_a_slower_step_changes_neither_the_step_count_nor_the_metrics(tmp_path, monkeypatch):
  from genjax.experiments import compare as compare_config  # pylint: disable=g-import-not-at-top
  from genjax import parallel  # pylint: disable=g-import-not-at-top
  c = compare_config.get_config('digits,smoke')
  c.only = 'gan'
  config, per_step = compare.budgeted(compare.family_config('gan', c.families.gan, c, 0), c)
  c.budget_flops = 6.2 * per_step
  compare.main(c, str(tmp_path / 'plain'))
  plain = json.load(open(tmp_path / 'plain' / 'report.json'))
  real_train_step, slept = parallel.train_step, []

  def slowed(*args, **kwargs):
    step = real_train_step(*args, **kwargs)

    def run(*args):
      time.sleep(0.3)  # a busy machine
      slept.append(0.3)
      return step(*args)
    return run

  monkeypatch.setattr(parallel, 'train_step', slowed)
  compare.main(c, str(tmp_path / 'slow'))
  slow = json.load(open(tmp_path / 'slow' / 'report.json'))
  assert plain['runs'][0]['steps'] == slow['runs'][0]['steps'] == 6
  assert len(slept) == 6  # every step of the second run was slowed
  assert _untimed(plain['runs']) == _untimed(slow['runs'])
  assert _untimed(plain['data']) == _untimed(slow['data'])
  assert 'fd' in slow['runs'][0] and 'fd_lo' in slow['runs'][0]


@pytest.mark.parametrize('lo, hi', [(1, 784), (2, 20), (1e-5, 0.3), (3e-4, 2e-3), (1.2e-4, 9e-4)])
def test_log_axis_labels_do_not_overlap(lo, hi):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(5.5, 4.5))
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  ax.scatter([lo, math.sqrt(lo * hi), hi], [1, 2, 3])
  ax.set_xscale('log')
  compare_report._log_ticks(ax)
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  labels = ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
  boxes = sorted((t.get_window_extent(renderer) for t in labels
                  if t.get_text() and t.get_visible()), key=lambda b: b.x0)
  assert len(boxes) >= 2, 'at least two labelled ticks'
  assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), [(b.x0, b.x1) for b in boxes]


def test_an_adaptive_sampler_reports_the_evaluations_its_draw_counted():
  """A family whose cost per sample is known only after drawing (network_evals
  None) is asked through its `draw` tool, with the measured samples' key."""
  seen = []

  def count(state, rng, num):
    seen.append((state, tuple(np.asarray(rng)), num))
    return {'x': np.zeros((num, 2))}, 37

  rng = np.array([0, 5], np.uint32)
  assert compare.counted_evals({'draw': count}, 'state', rng, 8) == 37
  assert seen == [('state', (0, 5), 8)]
  assert compare.counted_evals({}, 'state', rng, 8) is None
