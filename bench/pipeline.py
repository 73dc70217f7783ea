"""The input pipeline: batches/second the loader delivers, against the
batches/second the train step consumes, for each offline dataset.

  python bench/pipeline.py          # pysrc, digits and toy2d, each with the configs that train on it
  python bench/pipeline.py --smoke  # digits with the VAE's smoke config: checks the script runs

The loader is what the trainer iterates: `Dataset.train_iter` (reads from the
TFDS data source, shuffles, batches, in a prefetch thread), drained as fast as
it goes, for the batch size of each config. The step is the train
step on batches read beforehand (as bench/families.py times it). The target:
the loader delivers at least 5x what the step consumes.
"""
import argparse
import time

import benchlib
from genjax.experiments import autoregressive, diffusion, flow, gan, vae
from genjax.data import Dataset

TARGET = 5.0
CONFIGS = [  # (dataset label, config module, variant): every default, and a toy2d one
    ('pysrc', autoregressive, 'pysrc'),
    ('digits', diffusion, 'digits'),
    ('digits', gan, 'digits'),
    ('digits', vae, 'digits'),
    ('digits', flow, 'digits'),
    ('toy2d', gan, 'ring8'),
    ('toy2d', flow, 'moons'),
]


def loader_rate(config, num_batches):
  data = Dataset(config.data, seed=config.seed)
  it = data.train_iter(0)
  try:
    next(it)  # the first batch opens the source
    t = time.perf_counter()
    for _ in range(num_batches):
      next(it)
    return num_batches / (time.perf_counter() - t)
  finally:
    it.close()


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--batches', type=int, default=200, help='loader batches timed')
  p.add_argument('--steps', type=int, default=10, help='train steps timed per round')
  p.add_argument('--smoke', action='store_true')
  args = p.parse_args()
  configs, rounds = CONFIGS, 3
  if args.smoke:
    configs, args.batches, args.steps, rounds = [('digits', vae, 'digits,smoke')], 2, 1, 1
  rows = []
  for label, module, variant in configs:
    config = module.get_config(variant)
    loads = loader_rate(config, args.batches)
    data, family, state = benchlib.family_setup(config)
    _, steps = benchlib.train_step_cost(family, state, data, args.steps, rounds)
    name = f'{config.family}:{variant}'
    rows.append([label, name, config.data.batch_size, f'{loads:,.0f}', f'{steps:,.1f}',
                 f'{loads / steps:,.1f}x', benchlib.verdict(loads / steps, TARGET)])
    print(f'{label} ({name}): loader {loads:,.0f} batches/s, step {steps:,.1f} steps/s', flush=True)
  print(f'machine: {benchlib.machine()}')
  benchlib.table(['dataset', 'config', 'batch', 'loader batches/s', 'step batches/s',
                  'loader / step', f'>= {TARGET:.0f}x'], rows)


if __name__ == '__main__':
  main()
