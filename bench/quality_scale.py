"""Sample-quality metrics (genjax.evals.quality) at the size of a full split:
Fréchet distance, exact k-NN precision and recall, their bootstrap intervals
and sharpness, on random features and images.

  python bench/quality_scale.py            # 60,000 real + 60,000 samples, 128-d
  python bench/quality_scale.py --smoke    # 500 + 500: checks the script runs

Prints each step's seconds and the process's peak resident memory after it
(ru_maxrss, which only grows): the k-NN blocks keep it flat, where one
N x N float64 matrix of the default size would hold 29 GB.
"""
import argparse
import resource
import time

import numpy as np

import benchlib
from genjax.evals import quality


def peak_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--n', type=int, default=60_000, help='real examples, and as many samples')
  p.add_argument('--dim', type=int, default=128)
  p.add_argument('--reps', type=int, default=200, help='bootstrap resamples')
  p.add_argument('--interval_samples', type=int, default=1000,
                 help='samples in the FD interval (a comparison scores this many)')
  p.add_argument('--smoke', action='store_true')
  args = p.parse_args()
  if args.smoke:
    args.n, args.reps, args.interval_samples = 500, 10, 200
  rng = np.random.default_rng(0)
  real = rng.standard_normal((args.n, args.dim), np.float32)
  fake = rng.standard_normal((args.n, args.dim), np.float32) * 1.1 + 0.05
  images = rng.integers(0, 256, (args.n, 28, 28, 1), np.uint8)
  rows = [['inputs (interpreter, jax, the arrays)', '', '', f'{peak_mib():,.0f}']]

  def step(name, fn):
    t = time.perf_counter()
    out = fn()
    rows.append([name, f'{time.perf_counter() - t:.2f}', out, f'{peak_mib():,.0f}'])
    return out

  n = f'{args.n:,}'
  step(f'frechet_distance, {n} vs {n}', lambda: f'{quality.frechet_distance(fake, real):.4f}')
  holder = {}

  def indicators():
    holder['in_real'], holder['in_fake'] = quality.knn_indicators(real, fake, k=3)
    return f"precision {holder['in_real'].mean():.4f}, recall {holder['in_fake'].mean():.4f}"

  step(f'knn_indicators (k = 3), {n} vs {n}: precision and recall', indicators)
  m = args.interval_samples
  step(f'frechet_interval, {m:,} samples, {args.reps} resamples',
       lambda: '(%.4f, %.4f)' % quality.frechet_interval(fake[:m], real, args.reps))
  step(f'mean_interval of precision and recall, {args.reps} resamples each',
       lambda: '(%.4f, %.4f), (%.4f, %.4f)' % (
           quality.mean_interval(holder['in_real'], args.reps)
           + quality.mean_interval(holder['in_fake'], args.reps)))
  step(f'sharpness, {n} images 28x28x1', lambda: f'{quality.sharpness(images, (0, 255)):.4f}')
  print(f'machine: {benchlib.machine()}')
  benchlib.table(['step', 'seconds', 'value', 'peak RSS after it (MiB)'], rows)


if __name__ == '__main__':
  main()
