"""Host memory: let XLA:CPU reuse the memory its last step freed.

XLA:CPU allocates a step's temporaries with malloc, one large block per step.
glibc serves a block that large with a fresh mmap and unmaps it when it is
freed, so each step faults its temporaries in again, page by page.
`keep_freed_memory` asks glibc to keep freed memory in the heap instead (no
mmap, no trimming), at the price of the process keeping the most memory it
ever held. It leaves glibc's arenas (one per thread, up to a bound) alone:
a single arena slows XLA's compiler, which allocates from several threads.
bench/hostmem.py measures the faults it saves and bench/README.md the effect
on a step and on compilation.

This is a setting of the whole process, so genjax never applies it on import:
launch.py, which owns its process, does (`--keep_freed_memory`, on by default
on a CPU). Other launchers get the same from glibc's environment variables:
MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=18446744073709551615.
"""
import ctypes
import importlib.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
# Importable when JAX has an accelerator: then the CPU step's temporaries are not the issue.
_ACCELERATOR_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin',
                        'jax_rocm7_plugin', 'libtpu')


def runs_on_cpu(environ=os.environ):
  """Whether JAX will pick the CPU, judged without starting JAX's backends."""
  platforms = environ.get('JAX_PLATFORMS', '').split(',')[0].strip()
  if platforms:
    return platforms == 'cpu'
  return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def keep_freed_memory():
  """Sets glibc to keep freed memory; returns whether it did (False off glibc).

  Takes full effect only before JAX starts its threads, that is before the
  first JAX computation or device query.
  """
  if not sys.platform.startswith('linux'):
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  # -1 is read as the largest size_t: never give the top of the heap back.
  return all(mallopt(param, value) == 1 for param, value in (
      (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
