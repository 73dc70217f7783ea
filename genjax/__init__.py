"""genjax: train, sample, evaluate and compare generative-model families in JAX.

Not the PyPI `genjax` probabilistic-programming library; this one installs as
`genjax-families`. Start at `genjax.run.main` (what launch.py calls) or
`genjax.families.base` (the contract a family fulfils).

Importing genjax asks glibc to keep freed host memory for reuse
(`genjax.hostmem`: a small model's CPU step ran 8-18% faster without the
page faults it saves); GENJAX_SYSTEM_MALLOC=1 keeps the defaults.
"""
from genjax import hostmem as _hostmem

__version__ = '0.1.0'
_hostmem.keep_freed_memory()
