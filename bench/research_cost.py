"""What the research-scale variants (mnist, cifar10) would cost: each registered
family's config, its train step counted on its jaxpr (genjax.flops) at the
dataset's real shapes, times its steps; then hours at a sustained rate.

  python bench/research_cost.py                  # at 200 TFLOP/s sustained (--tflops: another rate)
  python bench/research_cost.py --smoke          # the ,smoke configs: checks the script runs

No dataset is read: the step is traced on zeros of the real shapes (MNIST
28x28x1, CIFAR-10 32x32x3, 256 grey levels, 10 classes), so the count is the
same on any machine. The sustained rate is an assumption, not a measurement:
an H100's dense bfloat16 peak is 989 TFLOP/s, and a well-fed training run
reaches a third to a half of it.
"""
import argparse
import importlib

import jax.numpy as jnp

import benchlib
from genjax import families, flops
from genjax.data.pipeline import DatasetInfo

SHAPES = {'mnist': (28, 28, 1), 'cifar10': (32, 32, 3)}


def variants():
  """(family, dataset) for every registered family whose config has the variant."""
  out = []
  for name in sorted(families.REGISTRY):
    try:
      module = importlib.import_module(f'genjax.experiments.{name}')
    except ImportError:
      continue
    out += [(name, v) for v in SHAPES if v in getattr(module, 'VARIANTS', ())]
  return out


def cost(name, variant, smoke):
  config = importlib.import_module(f'genjax.experiments.{name}').get_config(
      variant + (',smoke' if smoke else ''))
  shape = SHAPES[variant]
  info = DatasetInfo(variant, 'image', shape, 256, 10, {'train': 50_000, 'test': 10_000})
  family = families.build(config, info)
  B = config.data.batch_size
  batch = {'image': jnp.zeros((B,) + shape, jnp.uint8), 'label': jnp.zeros((B,), jnp.int32)}
  per_step = flops.train_step(family, batch)
  return per_step, config.train.num_steps, B


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--tflops', type=float, default=200.0, help='sustained TFLOP/s assumed')
  p.add_argument('--smoke', action='store_true')
  args = p.parse_args()
  rows = []
  for name, variant in variants():
    per_step, steps, batch = cost(name, variant, args.smoke)
    total = per_step * steps
    rows.append([name, variant, batch, f'{per_step / 1e9:,.1f}', f'{steps:,}', f'{total:.2e}',
                 f'{total / (args.tflops * 1e12) / 3600:.2g}'])
  print(f'machine: {benchlib.machine()}')
  benchlib.table(['family', 'variant', 'batch', 'GFLOPs / step', 'steps', 'train FLOPs',
                  f'hours at {args.tflops:g} TFLOP/s'], rows)


if __name__ == '__main__':
  main()
