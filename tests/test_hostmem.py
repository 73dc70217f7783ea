"""genjax.hostmem: a step's temporaries reuse freed memory instead of faulting
fresh pages in on every call (each case runs in its own process: the setting
is per process and must precede JAX's threads)."""
import json
import os
import subprocess
import sys

import pytest

# Two jitted matmuls; the first's 49 MB result is a temporary the second reads:
# one allocation per call, above glibc's 32 MB mmap threshold.
PROGRAM = '''
import json, resource
import genjax, jax, jax.numpy as jnp
f = jax.jit(lambda a, b, c: (a @ b) @ c)
x = (jnp.ones((6000, 64)), jnp.ones((64, 2048)), jnp.ones((2048, 8)))
for _ in range(8):  # the heap grows to its steady size first
  f(*x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
  f(*x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4
print(json.dumps({'kept': genjax.hostmem.keep_freed_memory(), 'faults': faults}))
'''
PAGES = 6000 * 2048 * 4 // 4096  # pages of the temporary


def run(system_malloc):
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='',
             GENJAX_SYSTEM_MALLOC='1' if system_malloc else '0')
  out = subprocess.run([sys.executable, '-c', PROGRAM], env=env, capture_output=True, text=True,
                       timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_temporaries_reuse_freed_memory():
  kept = run(system_malloc=False)
  if not kept['kept']:
    pytest.skip('not glibc: genjax.hostmem leaves the allocator alone')
  # Without the setting every call faults all its pages in (12,000 here); with
  # it, none or a few thousand (seen under a parallel test run).
  assert kept['faults'] < 0.5 * PAGES, kept
  default = run(system_malloc=True)
  assert not default['kept']
  if default['faults'] < 0.5 * PAGES:
    pytest.skip(f"this C library's default already reuses the memory ({default['faults']:.0f} "
                f'faults a call; transparent huge pages?): nothing to compare')
  assert kept['faults'] < 0.5 * default['faults'], (kept, default)
