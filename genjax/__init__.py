"""genjax: train, sample, evaluate and compare generative-model families in JAX.

Not the PyPI `genjax` probabilistic-programming library; this one installs as
`genjax-families`. Start at `genjax.run.main` (what launch.py calls) or
`genjax.families.base` (the contract a family fulfils). Importing genjax
changes nothing in the process: process-wide settings belong to launch.py.
"""
__version__ = '0.1.0'
