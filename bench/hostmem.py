"""Page faults of a step's temporaries, with and without launch.py's host-memory
setting (genjax.hostmem), each in its own process.

  python bench/hostmem.py            # a 49 MB temporary, 8 warm-up and 20 timed calls
  python bench/hostmem.py --smoke    # a 4 MB temporary, 1 + 2 calls: checks the script runs

Prints minor page faults per call and the temporary's pages. Fault counts
depend on what else the machine runs (a heap that grows beside other
processes fragments), so they live here and not in a test.
"""
import argparse
import json
import os
import subprocess
import sys

import benchlib

WORKER = '''
import json, resource, sys
from genjax import hostmem
keep, rows, warmup, calls = sys.argv[1] == 'keep', int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
kept = hostmem.keep_freed_memory() if keep else False
import jax, jax.numpy as jnp
f = jax.jit(lambda a, b, c: (a @ b) @ c)  # (a @ b) is the temporary
x = (jnp.ones((rows, 64)), jnp.ones((64, 2048)), jnp.ones((2048, 8)))
for _ in range(warmup):
  f(*x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(calls):
  f(*x).block_until_ready()
print(json.dumps({'kept': kept, 'faults': (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls}))
'''


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--smoke', action='store_true')
  args = p.parse_args()
  rows, warmup, calls = (500, 1, 2) if args.smoke else (6000, 8, 20)
  pages = rows * 2048 * 4 // 4096
  env = {k: v for k, v in os.environ.items() if not k.startswith(('MALLOC_', 'GLIBC_TUNABLES'))}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS='')
  results = []
  for mode in ('default', 'keep'):
    out = subprocess.run([sys.executable, '-c', WORKER, mode, str(rows), str(warmup), str(calls)],
                         env=env, capture_output=True, text=True, check=True, timeout=600)
    results.append((mode, json.loads(out.stdout.strip().splitlines()[-1])))
  print(f'machine: {benchlib.machine()}')
  benchlib.table(['host memory', 'temporary (pages)', 'minor faults per call'],
                 [['C library default' if mode == 'default' else 'genjax.hostmem'
                   + ('' if r['kept'] else ' (not applied: not glibc)'), pages, f"{r['faults']:,.0f}"]
                  for mode, r in results])


if __name__ == '__main__':
  main()
