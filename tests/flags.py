"""XLA flags of the suite's processes (tests/conftest.py, and the commands and
notebooks the tests start). They are the same in every process, so that a
program compiled in one is read from the shared compilation cache in the
others (the device count is not part of the cache key).

XLA:CPU compiles at its first optimisation level: the suite's programs are
small, and most of their time is compilation, which this level cuts several
fold while they run about as fast. (Level 0 compiles as quickly but makes
loops such as a KV-cache decode run several times slower.)
"""
QUICK_COMPILE = '--xla_backend_optimization_level=1'
# A process with one CPU device, as a user's laptop or a Colab CPU runtime has.
ONE_DEVICE = QUICK_COMPILE + ' --xla_gpu_deterministic_ops=true'
