"""The comparison harness and sweeps."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from genjax import compare, sweep
from genjax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _SlowFirstCall:
  """A family whose first sample call pays a 'compile' of 0.5 s."""

  def __init__(self):
    self.calls = 0

  def sample(self, state, rng, num):
    del state, rng
    self.calls += 1
    time.sleep(0.5 if self.calls == 1 else 0.01)
    return {'x': np.zeros((num, 2))}


def test_sample_speed_leaves_out_compilation():
  per_s, compile_s, samples = compare.sampling_cost(_SlowFirstCall(), None, 100, repeats=2)
  assert per_s > 100 / 0.1  # 10 ms per call, not the 500 ms first call
  assert compile_s == pytest.approx(0.49, abs=0.05)
  assert samples['x'].shape == (100, 2)


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


def test_the_report_shows_the_measured_columns_and_says_who_is_missing():
  rows = [{'family': 'gan', 'likelihood': 'none', 'seed': s, 'modes': m, 'high_quality': hq,
           'network_evals': 1, 'samples_per_s': 100.0}
          for s, m, hq in ((0, 25, 0.9), (1, 23, 0.7))]
  rows.append({'family': 'flow', 'likelihood': 'exact', 'seed': 0, 'nll': -1.5, 'modes': 25,
               'high_quality': 0.5, 'network_evals': 1, 'samples_per_s': 50.0})
  summary = compare.aggregate(rows)
  assert summary['gan']['modes'] == (24.0, 1.0, 2)
  report = compare.markdown(summary, rows, 'python launch.py',
                            missing=[('autoregressive', 'it models tokens')]).splitlines()
  header = next(line for line in report if line.startswith('| family'))
  assert 'bits/dim' not in header and 'FD' not in header  # no family measured them
  assert 'test NLL (nats)' in header and 'modes' in header and 'high quality' in header
  gan = next(line for line in report if line.startswith('| gan |'))
  flow = next(line for line in report if line.startswith('| flow |'))
  assert '24.0 ± 1.0' in gan and '0.800 ± 0.100' in gan
  assert gan.split(' | ')[header.split(' | ').index('test NLL (nats)')] == 'n/a'
  assert '-1.500' in flow
  assert '- **autoregressive** is not in the table: it models tokens.' in report
  # Other samplers of the same model, with the metrics the rows carry.
  rows[0]['cost_points'] = [{'sampler': 'DDIM 10', 'network_evals': 10, 'samples_per_s': 9.0,
                             'modes': 20, 'high_quality': 0.25}]
  table = compare.cost_table(rows)
  assert '| gan | DDIM 10 | 10 | 9.0 | 20.0 | 0.250 |' in table and 'FD' not in table
