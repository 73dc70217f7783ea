"""Gradient accumulation (train.microbatches=K): the train step's temporary
memory, as XLA's compiled program reports it, and its time, for K microbatches
of the same per-device batch.

  python bench/microbatches.py                            # diffusion on digits, K = 1, 2, 4, 8
  python bench/microbatches.py --experiment=autoregressive:pysrc --ks=1,2,4
  python bench/microbatches.py --smoke                    # K = 1, 2 on a smoke config (the VAE's by
                                                          # default): checks the script runs

The step is the trainer's (genjax.parallel.train_step, one device), compiled
ahead of its first call. Temporary bytes are what XLA
allocates for the step's activations and gradients beside its arguments and
outputs (`memory_analysis().temp_size_in_bytes`); the time is the best of 3
rounds of --steps calls, after a warm-up call.
"""
import argparse
import time

import jax

import benchlib
from families import default_config
from genjax import families, parallel
from genjax.data import Dataset


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--experiment', default='', help='family:variant (default diffusion:digits)')
  p.add_argument('--ks', default='1,2,4,8', help='microbatch counts; each must divide the batch')
  p.add_argument('--batch_size', type=int, default=0, help='0: the config\'s own')
  p.add_argument('--steps', type=int, default=5, help='timed steps per round')
  p.add_argument('--smoke', action='store_true')
  args = p.parse_args()
  if args.smoke:
    args.experiment, args.ks, args.steps = args.experiment or 'vae:digits', '1,2', 1
  args.experiment = args.experiment or 'diffusion:digits'
  name, variant = args.experiment.split(':')
  config, _ = default_config(name, args.smoke, variant)
  if args.batch_size:
    config.data.batch_size = args.batch_size
  data = Dataset(config.data, seed=config.seed)
  devices = jax.devices()[:1]
  batch = parallel.shard(data.train_batch(0), devices)
  rng = jax.random.PRNGKey(1)
  rows = []
  ks = [int(k) for k in args.ks.split(',')]
  if any(k < 1 or config.data.batch_size % k for k in ks):
    p.error(f'each of --ks={args.ks} must divide the batch of {config.data.batch_size}')
  for k in ks:
    config.train.microbatches = k
    family = families.build(config, data.info)
    state = parallel.replicate(family.init(jax.random.PRNGKey(0), data.train_batch(0)), devices)
    # The trainer's step, compiled ahead so that XLA reports its memory.
    t = time.perf_counter()
    step = parallel.train_step(family.train_step, devices).lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - t
    memory = step.memory_analysis().temp_size_in_bytes
    held = [state]  # the step donates its state: each call takes the last one's

    def one():
      held[0], metrics = step(held[0], batch, rng)
      return metrics

    seconds = benchlib.timeit(one, args.steps, warmup=1, rounds=3)
    rows.append([k, config.data.batch_size // k, f'{memory / 2**20:.1f}', f'{1e3 * seconds:.1f}',
                 f'{compile_s:.1f}'])
    print(f'K={k}: {memory / 2**20:.1f} MiB temporaries, {1e3 * seconds:.1f} ms a step', flush=True)
  print(f'machine: {benchlib.machine()}')
  print(f'config: experiments/{name}.py:{variant}{",smoke" if args.smoke else ""}, '
        f'batch {config.data.batch_size}, one device\n')
  benchlib.table(['microbatches', 'examples each', 'step temporaries MiB', 'ms / step',
                  'compile s'], rows)


if __name__ == '__main__':
  main()
