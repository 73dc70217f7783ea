"""Experiment configs, one file per family: `get_config('variant')`, with
`'variant,smoke'` for the same experiment shrunk to a few steps (tests, docs).
Installed with the package, so `from genjax.experiments import diffusion` works from a
notebook too."""
