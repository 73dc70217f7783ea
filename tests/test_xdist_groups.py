"""The suite's xdist scheduler (tests/conftest.py): tests of one xdist_group run
on one worker, and a test whose worker crashes runs once more on a new one,
which also takes the tests queued behind it.
Tests that read what an earlier test of their group trained depend on it
(tests/test_research_variants.py, tests/test_docs_commands.py), and a lost
group only shows as a slower suite: a pytest session of two workers on a toy
file checks it here."""
import collections
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOY = '''
import os
import time

import pytest

@pytest.mark.parametrize('x', [pytest.param(i, marks=pytest.mark.xdist_group(f'g{i % 2}'))
                               for i in range(6)] + [6, 7])
def test_toy(x):
  log = os.environ['TOY_LOG']
  with open(log, 'a') as f:
    f.write(f"{x} {os.environ['PYTEST_XDIST_WORKER']}\\n")
  if x == 4 and not os.path.exists(log + '.crashed'):  # the first run of 4 kills its worker
    open(log + '.crashed', 'w').close()
    os.abort()
  if x == 1:  # g1's worker holds its tests until 4 has run again: only a worker
    for _ in range(600):  # started after the crash can run 4, and 6 and 7 wait beside it
      if [l.split()[0] for l in open(log).read().splitlines()].count('4') == 2:
        break
      time.sleep(0.1)
'''


def test_a_group_runs_on_one_worker_and_a_crashed_test_reruns(tmp_path):
  (tmp_path / 'test_toy.py').write_text(TOY)
  log = tmp_path / 'log'
  # A session of its own: nothing of this one's xdist or conftest settings.
  env = {k: v for k, v in os.environ.items() if not k.startswith(('PYTEST_', 'GENJAX_'))}
  env.update(TOY_LOG=str(log), PYTHONPATH=ROOT)
  out = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'tests.conftest', '-p', 'no:cacheprovider',
       '-n', '2', '--dist', 'loadgroup', '--rootdir', str(tmp_path), '-c', os.devnull,
       str(tmp_path / 'test_toy.py')],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and '8 passed, 1 rerun' in out.stdout, (
      out.stdout[-3000:] + out.stderr[-3000:])
  runs = collections.defaultdict(list)
  for line in log.read_text().splitlines():
    x, worker = line.split()
    runs[int(x)].append(worker)
  assert sorted(runs) == list(range(8)) and len(runs[4]) == 2, runs
  for group in ((0, 2, 4), (1, 3, 5)):
    assert len({runs[x][0] for x in group}) == 1, (group, runs)  # one worker each
  assert runs[0][0] != runs[1][0], runs  # two groups, two workers
  assert runs[4][1] not in (runs[4][0], runs[1][0]), runs  # the rerun: on a new worker
  # 6 and 7, queued on the crashed worker behind 4, go to the new worker with it.
  assert runs[6] == runs[7] == [runs[4][1]], runs
