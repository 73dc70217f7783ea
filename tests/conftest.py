"""Runs before jax is imported: 4 fake CPU devices, deterministic GPU ops,
float32 matmuls at full precision, a private TFDS dir, and one persistent
compilation cache for the whole run (the xdist workers and the processes the
tests start share it): the suite compiles the same smoke models in many
tests, and a second compile of a program is a read from disk. Every compile
is kept, however short, and XLA:CPU compiles at its first optimisation level
(tests/flags.py).

On a GPU the suite runs unchanged: multi-device tests take the CPU devices
explicitly, and comparisons run at the highest matmul precision (TF32 is the
GPU default) with deterministic reductions and scatter-adds.
"""
import faulthandler
import json
import os
import shutil
import tempfile

from tests.flags import ONE_DEVICE  # pylint: disable=g-import-not-at-top

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4 ' + ONE_DEVICE)
os.environ.setdefault('TFDS_DATA_DIR', os.path.join(tempfile.gettempdir(), 'genjax_test_tfds'))
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'genjax_test_jax_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

# A native crash (a fatal signal in XLA or a C extension) kills an xdist
# worker, and CI keeps only the end of the output. Each worker writes its
# faulthandler dump to a file of its own; the controller reruns a crashed test
# once and prints the dump's first lines in the summary.
if 'PYTEST_XDIST_WORKER' not in os.environ:
  os.environ['GENJAX_CRASH_DIR'] = tempfile.mkdtemp(prefix='genjax_crash_')
  # Where the workers write each test's xdist group for the scheduler below.
  os.environ['GENJAX_GROUPS_DIR'] = tempfile.mkdtemp(prefix='genjax_groups_')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

if jax.default_backend() == 'gpu':  # TF32 otherwise; a CPU computes float32 either way
  jax.config.update('jax_default_matmul_precision', 'highest')


@pytest.hookimpl(trylast=True)  # after pytest's faulthandler plugin points it at stderr
def pytest_configure(config):
  del config
  worker = os.environ.get('PYTEST_XDIST_WORKER')
  if worker and os.environ.get('GENJAX_CRASH_DIR'):
    log = open(os.path.join(  # pylint: disable=consider-using-with
        os.environ['GENJAX_CRASH_DIR'], f'{worker}-{os.getpid()}.log'), 'w')
    faulthandler.enable(file=log, all_threads=True)


# Tests marked xdist_group(name) share what they train on one worker
# (tests/test_research_variants.py, test_docs_commands.py). xdist's own
# loadgroup marks a test's group by editing its node id, which pytest 9 no
# longer reads, so its scheduler would spread a group over the workers. Each
# worker writes its tests' groups to a file instead, and the controller's
# scheduler reads the file.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
  worker, folder = os.environ.get('PYTEST_XDIST_WORKER'), os.environ.get('GENJAX_GROUPS_DIR')
  if not worker or not folder or not getattr(config.option, 'loadgroup', False):
    return
  groups = {}
  for item in items:
    names = sorted({str(m.args[0] if m.args else m.kwargs.get('name', 'default'))
                    for m in item.iter_markers('xdist_group')})
    if names:
      groups[item.nodeid] = '_'.join(names)
  path = os.path.join(folder, f'{worker}.json')
  with open(path + '.tmp', 'w') as f:
    json.dump(groups, f)
  os.replace(path + '.tmp', path)


def pytest_xdist_make_scheduler(config, log):
  if config.getoption('dist') != 'loadgroup' or not os.environ.get('GENJAX_GROUPS_DIR'):
    return None
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=g-import-not-at-top

  class GroupScheduling(LoadScopeScheduling):
    """xdist's loadscope with a test's scope its group (or the test itself),
    read from the file its worker wrote once it had collected. A crashed test
    runs again once (pytest_handlecrashitem reports it)."""
    groups = None

    def _split_scope(self, nodeid):
      if nodeid.rfind('@') > nodeid.rfind(']'):  # xdist's own mark, where it works
        return nodeid.split('@')[-1]
      if self.groups is None:
        folder = os.environ['GENJAX_GROUPS_DIR']
        names = sorted(n for n in os.listdir(folder) if n.endswith('.json'))
        self.groups = {}
        if names:  # every worker collected the same tests: any one file will do
          with open(os.path.join(folder, names[0])) as f:
            self.groups = json.load(f)
      return self.groups.get(nodeid, nodeid)

    def remove_node(self, node):
      # super() queues the crashed test's unit again, with the crashed test.
      # xdist calls pytest_handlecrashitem next, which counts this crash in
      # _crashes: a test that has used its reruns is not queued again.
      crashitem = super().remove_node(node)
      if crashitem is not None and _crashes.get(crashitem, 0) >= CRASH_RERUNS:
        self.workqueue[self._split_scope(crashitem)][crashitem] = True
      return crashitem

    def mark_test_pending(self, item):
      del item  # remove_node has queued it again

    def _reschedule(self, node):
      # Units until the node holds more than two tests, or none are left (then
      # it stops): a worker runs its last test only once it gets another or
      # the stop, and a worker started after a crash is given work only here.
      while not node.shutting_down:
        left = len(self.workqueue)
        super()._reschedule(node)
        if len(self.workqueue) == left:
          return

  return GroupScheduling(config, log)


def pytest_xdist_auto_num_workers(config):
  """`-n auto`: a worker per core, at most 4 (each holds a JAX runtime and its compiles)."""
  del config
  return max(1, min(4, len(os.sched_getaffinity(0))))


def tiny_ar_config(variant='digits'):
  """The experiment's config, shrunk so a step compiles and runs in a moment."""
  from genjax.experiments import autoregressive  # pylint: disable=g-import-not-at-top
  c = autoregressive.get_config(variant + ',smoke')
  c.train.num_steps = 6
  c.train.checkpoint_every = 3
  return c


@pytest.fixture
def tiny_config():
  return tiny_ar_config


def cpu_devices(n):
  """n CPU devices, or a skip that says why (conftest asks XLA for 4)."""
  devices = jax.devices('cpu')
  if len(devices) < n:
    pytest.skip(f'needs {n} CPU devices, has {len(devices)}: set XLA_FLAGS='
                f'--xla_force_host_platform_device_count={n} before jax starts')
  return devices[:n]


_crashes = {}  # test id -> times it crashed its worker (controller only)
CRASH_RERUNS = 1


def pytest_handlecrashitem(crashitem, report, sched):
  """xdist: a test whose worker died of a native crash runs once more on a
  fresh worker; a second crash fails it."""
  _crashes[crashitem] = _crashes.get(crashitem, 0) + 1
  if _crashes[crashitem] <= CRASH_RERUNS:
    sched.mark_test_pending(crashitem)
    report.outcome = 'rerun'


def pytest_report_teststatus(report, config):
  del config
  if report.outcome == 'rerun':
    return 'rerun', 'R', ('RERUN', {'yellow': True})
  return None


def pytest_terminal_summary(terminalreporter):
  """The crashed tests, and where each crashed worker's faulthandler dump says it crashed."""
  crash_dir = os.environ.get('GENJAX_CRASH_DIR')
  if not _crashes or not crash_dir or not os.path.isdir(crash_dir):
    return
  tr = terminalreporter
  tr.section('native crashes (each test reran once on a fresh worker)')
  for nodeid, n in _crashes.items():
    tr.write_line(f'{nodeid}: crashed its worker {n} time(s)')
  for name in sorted(os.listdir(crash_dir)):
    with open(os.path.join(crash_dir, name), errors='replace') as f:
      lines = f.read().splitlines()
    if lines:
      # The thread that crashed is 'Current thread'. A crash in a thread that
      # Python does not know (XLA's own) has none: then the main thread, which
      # faulthandler lists last, shows what the test was doing.
      start = next((i for i, line in enumerate(lines) if line.startswith('Current thread')),
                   max(len(lines) - 60, 0))
      tr.write_line(f'--- {name} (lines {start + 1}-{min(start + 60, len(lines))} of '
                    f'{len(lines)}, and its first line)')
      for line in ([lines[0]] if start else []) + lines[start:start + 60]:
        tr.write_line(line[:300])


def pytest_unconfigure(config):
  del config
  crash_dir = os.environ.get('GENJAX_CRASH_DIR')
  if 'PYTEST_XDIST_WORKER' not in os.environ and crash_dir:
    shutil.rmtree(crash_dir, ignore_errors=True)
