"""Importing genjax leaves the C allocator alone; launch.py's setting
(genjax.hostmem) moves large blocks from fresh mmaps into the heap. Where a
64 MB block lands is read from /proc/self/maps: glibc's default serves it from
an anonymous mapping, the setting from [heap]. Each case runs in its own process."""
import json
import os
import subprocess
import sys

import pytest

PROGRAM = '''
import ctypes, json, sys
import genjax
from genjax import hostmem

def region(addr):
  for line in open('/proc/self/maps'):
    fields = line.split()
    lo, hi = (int(x, 16) for x in fields[0].split('-'))
    if lo <= addr < hi:
      return fields[5] if len(fields) > 5 else 'anonymous'

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
out = {'on_import': region(libc.malloc(64 << 20))}
if sys.argv[1] == 'keep':
  out['kept'] = hostmem.keep_freed_memory()
  out['after'] = region(libc.malloc(64 << 20))
print(json.dumps(out))
'''


def run(mode):
  env = {k: v for k, v in os.environ.items() if not k.startswith(('MALLOC_', 'GLIBC_TUNABLES'))}
  out = subprocess.run([sys.executable, '-c', PROGRAM, mode], env=env, capture_output=True,
                       text=True, timeout=120, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc/self/maps')
def test_import_leaves_malloc_alone_and_the_setting_moves_large_blocks_to_the_heap():
  plain = run('import')
  assert plain['on_import'] != '[heap]', plain  # glibc's default: a fresh mapping
  kept = run('keep')
  if not kept['kept']:
    pytest.skip('not glibc: genjax.hostmem leaves the allocator alone')
  assert kept['on_import'] != '[heap]' and kept['after'] == '[heap]', kept


def test_launch_applies_the_setting_on_a_cpu_and_can_be_told_not_to():
  from genjax import hostmem  # pylint: disable=g-import-not-at-top
  assert hostmem.runs_on_cpu({'JAX_PLATFORMS': 'cpu'})
  assert not hostmem.runs_on_cpu({'JAX_PLATFORMS': 'cuda'})
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, 'launch.py', '--helpfull'], cwd=root, capture_output=True,
                       text=True, timeout=120)
  assert '--[no]keep_freed_memory' in out.stdout
