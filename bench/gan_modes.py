"""Mode coverage of the GAN's toy2d configs over seeds: the protocol of the
mode-collapse literature (VEEGAN, PacGAN): 2,500 samples after training; a
mode is captured when a sample lies within 3 std of it; a sample is high
quality when it lies within 3 std of some mode; mean over 10 trials.

  python bench/gan_modes.py
      ring8, grid25 and the collapsing grid25_collapse, seeds 0-9, each
      trained as `launch.py --config=experiments/gan.py:<variant>
      --config.seed=<seed>` would train it; prints a per-seed table and the
      means, and writes them to <workdir>/modes.json.

The runs use genjax's trainer and evaluators unchanged.
"""
import argparse
import concurrent.futures
import json
import multiprocessing
import os
import time

import numpy as np

from genjax.experiments import gan as gan_config
from genjax import families, train
from genjax.data import Dataset

def run_one(variant, seed, workdir, smoke=False):
  t = time.time()
  config = gan_config.get_config(variant + (',smoke' if smoke else ''))
  config.seed = seed
  config.train.progress_bar = False
  config.evals.modes.every = 0  # the protocol measures the final generator
  data = Dataset(config.data, seed=seed)
  ex = train.Experiment(config, workdir, data, families.build(config, data.info))
  r = dict(train.train_and_evaluate(ex).metrics['modes'])
  r['seconds'] = time.time() - t
  print(f'{variant} seed {seed}: {r["modes"]}/{r["num_modes"]} modes, '
        f'{100 * r["high_quality"]:.1f}% high quality ({r["seconds"]:.0f} s)', flush=True)
  return r


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variants', default=None,
                      help='default ring8,grid25,grid25_collapse; ring8 with --smoke')
  parser.add_argument('--seeds', type=int, default=10)
  parser.add_argument('--workdir', default=None,
                      help='default /tmp/gan_modes, /tmp/gan_modes_smoke with --smoke')
  parser.add_argument('--jobs', type=int, default=2, help='runs at once (one per core)')
  parser.add_argument('--smoke', action='store_true', help='1 seed of the smoke configs')
  args = parser.parse_args()
  args.variants = args.variants or ('ring8' if args.smoke else 'ring8,grid25,grid25_collapse')
  args.workdir = args.workdir or '/tmp/gan_modes' + ('_smoke' if args.smoke else '')
  seeds = range(1 if args.smoke else args.seeds)
  variants = args.variants.split(',')
  # A finished run's workdir is evaluated again, not retrained: a rerun resumes the table.
  jobs = [(v, s, os.path.join(args.workdir, f'{v}_seed{s}'), args.smoke)
          for v in variants for s in seeds]
  with concurrent.futures.ProcessPoolExecutor(
      args.jobs, mp_context=multiprocessing.get_context('spawn')) as pool:
    done = list(pool.map(run_one, *zip(*jobs)))
  results = {v: [r for (jv, *_), r in zip(jobs, done) if jv == v] for v in variants}
  print()
  print('seed  ' + ''.join(f'| {v:>22} ' for v in variants))
  print('      ' + ''.join('|  modes  high-quality % ' for _ in variants))
  for i, s in enumerate(seeds):
    cells = [results[v][i] for v in variants]
    print(f'{s:>4}  ' + ''.join(f'| {r["modes"]:>5}  {100 * r["high_quality"]:>14.1f} ' for r in cells))
  means = {v: {'modes': float(np.mean([r['modes'] for r in results[v]])),
               'high_quality': float(np.mean([r['high_quality'] for r in results[v]])),
               'num_modes': results[v][0]['num_modes']} for v in variants}
  print('mean  ' + ''.join(f'| {means[v]["modes"]:>5.2f}  {100 * means[v]["high_quality"]:>14.1f} '
                           for v in variants))
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, 'modes.json'), 'w') as f:
    json.dump({'per_seed': results, 'mean': means}, f, indent=2)


if __name__ == '__main__':
  main()
