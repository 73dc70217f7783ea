"""Host memory: let XLA:CPU reuse the memory its last step freed.

XLA:CPU allocates a step's temporaries with malloc, as one block per step
(55 MB for the AR step at nanoGPT's CPU size, gigabytes at baby-GPT size).
glibc serves blocks over 32 MB with a fresh mmap and unmaps them when they are
freed, so each step faults its temporaries in again, page by page: 14,000
minor faults a step at the nanoGPT size; without them the step took 8-18%
less time on a 2-core CPU (bench/README.md). Keeping freed memory in the heap for the next step (one
arena, no mmap, no trimming; `mallopt`) removes them.

The price: the process keeps the most memory it ever held until it exits,
which a training process does anyway. Set GENJAX_SYSTEM_MALLOC=1 to keep the C
library's defaults. Elsewhere than glibc (macOS, musl) this does nothing.
"""
import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_memory():
  """Sets glibc to keep freed memory; whether it did.

  Takes full effect before JAX starts its threads (before the first JAX
  computation or device query): genjax calls it when it is imported.
  """
  if not sys.platform.startswith('linux') or os.environ.get('GENJAX_SYSTEM_MALLOC') == '1':
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  # -1 is read as the largest size_t: never give the top of the heap back.
  return all(mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
