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
