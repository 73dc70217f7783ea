"""Generative-model families: the registry.

A family is a module with `build(config, info) -> Family` (the contract the
trainer relies on: `genjax.families.base`) and `MODALITIES`, the kinds of data
it models ('image', 'text', 'points'). It may also define, for
`genjax.config_check`: `POSITIVE` and `NON_NEGATIVE` (its own config fields
that must be so), `config_problems(config)` and `data_problems(config, info,
num_devices)` (lists of 'field=value: what is allowed' sentences). Adding a
family is its module, its line here, and its experiment config.
"""
import importlib

from genjax.errors import ConfigError

REGISTRY = {
    'autoregressive': 'genjax.families.autoregressive',
    'diffusion': 'genjax.families.diffusion',
    'flow': 'genjax.families.flow',
    'flow_matching': 'genjax.families.flow_matching',
    'gan': 'genjax.families.gan',
    'masked_diffusion': 'genjax.families.masked_diffusion',
    'vae': 'genjax.families.vae',
}


def module(name):
  """The family's module; a ConfigError names the known ones."""
  if name not in REGISTRY:
    raise ConfigError(f'unknown family {name!r}; known: {sorted(REGISTRY)}')
  return importlib.import_module(REGISTRY[name])


def modelling(modality):
  """The registered families that model `modality`, in registry order."""
  return [name for name in REGISTRY if modality in module(name).MODALITIES]


def build(config, info):
  return module(config.family).build(config, info)
