"""Generative-model families. Each is a module with `build(config, info) -> Family`
(see `genjax.families.base` for the contract the trainer relies on)."""
import importlib

from genjax.errors import ConfigError

REGISTRY = {
    'autoregressive': 'genjax.families.autoregressive',
    'diffusion': 'genjax.families.diffusion',
    'flow': 'genjax.families.flow',
    'gan': 'genjax.families.gan',
    'masked_diffusion': 'genjax.families.masked_diffusion',
    'vae': 'genjax.families.vae',
}


def build(config, info):
  if config.family not in REGISTRY:
    raise ConfigError(f'unknown family {config.family!r}; known: {sorted(REGISTRY)}')
  return importlib.import_module(REGISTRY[config.family]).build(config, info)
