"""python -m genjax.report: time across resumes, the metrics a workdir has, and
errors of one sentence."""
import json
import os
import subprocess
import sys

import pytest

from genjax import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(workdir, runs):
  """metrics.jsonl as MetricWriter writes it, for runs = [(t0, [(elapsed, step, split, metrics)])]:
  each run a process whose clock starts at 0 at wall time t0."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for t0, records in runs:
      for elapsed, step, split, metrics in records:
        f.write(json.dumps({'step': step, 'split': split, 'time': t0 + elapsed, **metrics,
                            'elapsed_s': elapsed}) + '\n')


@pytest.fixture
def resumed(tmp_path):
  """Trained to step 4 in 20 s, stopped; resumed an hour later from step 4 to 8 in 12 s."""
  _write(tmp_path, [
      (1000.0, [(10.0, 2, 'train', {'loss': 2.0}), (20.0, 4, 'train', {'loss': 1.5}),
                (20.5, 4, 'validation', {'bpd': 3.0, 'nll_per_dim': 2.1, 'likelihood': 'exact'})]),
      (4600.0, [(5.0, 6, 'train', {'loss': 1.2}), (12.0, 8, 'train', {'loss': 1.0}),
                (12.5, 8, 'validation', {'bpd': 2.5, 'nll_per_dim': 1.7, 'likelihood': 'exact'}),
                (14.0, 8, 'test', {'bpd': 2.6, 'nll_per_dim': 1.8, 'likelihood': 'exact'})]),
  ])
  return str(tmp_path)


def test_time_continues_across_a_resume(resumed):
  assert report.eval_curve(resumed, 'validation') == [(4, 20.5, [2.1, 3.0]),
                                                      (8, 20.5 + 12.5, [1.7, 2.5])]
  assert [t for _, t, _ in report.eval_curve(resumed, 'train', ('loss',))] == [10, 20, 25.5, 32.5]
  table = report.markdown(resumed, ['bpd'])
  assert '| 8 | 34 | test | 2.6000 |' in table.splitlines()


def test_a_resume_is_found_without_wall_times_too(tmp_path):
  """Records without 'time': a clock that goes back is a new process."""
  lines = [{'step': 2, 'split': 'train', 'loss': 1.0, 'elapsed_s': 30.0},
           {'step': 4, 'split': 'train', 'loss': 0.5, 'elapsed_s': 3.0}]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))
  assert [t for _, t, _ in report.eval_curve(str(tmp_path), 'train', ('loss',))] == [30.0, 33.0]


def test_list_prints_each_evaluators_metrics(resumed, capsys):
  report.main([resumed, '--list'])
  assert capsys.readouterr().out.splitlines() == [
      'train: loss', 'validation: bpd, nll_per_dim', 'test: bpd, nll_per_dim']


def _error(argv, capsys):
  with pytest.raises(SystemExit) as e:
    report.main(argv)
  assert e.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('genjax.report: '), lines
  return lines[0]


def test_an_unknown_metric_or_evaluator_names_the_ones_there(resumed, capsys):
  line = _error([resumed, '--metric=bpdd'], capsys)
  assert "no metric 'bpdd'" in line and 'they have bpd, nll_per_dim' in line
  line = _error([resumed, '--split=valid'], capsys)
  assert "no evaluator 'valid'" in line and 'it has train, validation, test' in line
  report.main([resumed, '--split=train', '--metric=loss'])
  assert '| 8 | 32 | train | 1.0000 |' in capsys.readouterr().out  # 20.5 + 12


def test_a_missing_metrics_file_is_one_sentence(tmp_path, capsys):
  line = _error([str(tmp_path / 'nowhere')], capsys)
  assert 'no metrics.jsonl in' in line and 'does not exist' in line
  # A comparison's root: the runs below it have the metrics.
  _write(tmp_path / 'vae' / 'seed_0', [(0.0, [(1.0, 1, 'train', {'loss': 1.0})])])
  line = _error([str(tmp_path)], capsys)
  assert os.path.join(str(tmp_path), 'vae', 'seed_0') in line
  out = subprocess.run([sys.executable, '-m', 'genjax.report', str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
