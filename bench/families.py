"""Every family at its default config: train steps/second, samples/second, and
the compile time of its train step and of its sampler.

  python bench/families.py                 # the five defaults, one after another
  python bench/families.py --smoke         # the VAE's smoke config: checks the script runs
  python bench/families.py --configs=gan:ring8,flow:moons,vae:toy2d,diffusion:ring8,vae:digits --steps_per_call=10 --steps=50
                                           # toy configs and the digits VAE, also at 10 steps
                                           # per device call
  python bench/families.py --against_pmap  # the trainer's step against the same step on
                                           # jax.pmap (bench/pmap_reference.py), interleaved

A family's default is what `python launch.py --config=experiments/<family>.py`
trains (the AR model on pysrc, the others on digits or toy2d). The train step
is the step the trainer runs (genjax.parallel), on real batches read before the clock
starts (bench/pipeline.py times the loader); samples/second is the family's
`sample` with its config's sampler, after its first (compiling) call.
Compile time = the first call's time minus a later call's.
"""
import argparse
import importlib
import inspect

import benchlib
from genjax import families

TARGET_COMPILE_S = 30.0


def default_config(name, smoke=False, variant=None):
  module = importlib.import_module(f'genjax.experiments.{name}')
  variant = variant or inspect.signature(module.get_config).parameters['arg'].default
  return module.get_config(variant + (',smoke' if smoke else '')), variant


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--families', default='', help='comma-separated; default: every registered one')
  p.add_argument('--steps', type=int, default=10, help='timed train steps per round')
  p.add_argument('--num_samples', type=int, default=64)
  p.add_argument('--configs', default='',
                 help="comma-separated FAMILY:VARIANT (e.g. 'gan:ring8'); replaces --families")
  p.add_argument('--steps_per_call', type=int, default=1,
                 help='> 1: also time the train step at this many steps per device call')
  p.add_argument('--against_pmap', action='store_true',
                 help="only train steps/s: genjax.parallel's against jax.pmap's, interleaved")
  p.add_argument('--smoke', action='store_true')
  args = p.parse_args()
  rounds = 3
  names = args.configs or args.families or ','.join(sorted(families.REGISTRY))
  if args.smoke:  # one family: the code path is the same for all, and the suite tests each
    args.steps, args.num_samples, rounds = 1, 4, 1
    names = (args.configs or args.families or 'vae').split(',')[0]
  k = args.steps_per_call
  if args.against_pmap:
    return against_pmap(names, args.smoke, args.steps, k, rounds=1 if args.smoke else 5)
  rows = []
  for spec in names.split(','):
    name, _, variant = spec.partition(':')
    config, variant = default_config(name, args.smoke, variant)
    data, family, state = benchlib.family_setup(config)
    step_compile, steps_per_s = benchlib.train_step_cost(family, state, data, args.steps, rounds)
    extra = []
    if k > 1:
      k_compile, k_steps_per_s = benchlib.train_step_cost(family, state, data, args.steps, rounds, k)
      extra = [f'{k_steps_per_s:.2f}', f'{k_steps_per_s / steps_per_s:.2f}x', f'{k_compile:.1f}']
    sample_compile, samples_per_s = benchlib.sample_cost(family, state, args.num_samples)
    B = config.data.batch_size
    rows.append([f'{name} ({variant})', config.data.name, B, f'{steps_per_s:.2f}',
                 f'{steps_per_s * B:,.0f}', f'{step_compile:.1f}',
                 benchlib.verdict(step_compile, TARGET_COMPILE_S, higher_is_better=False),
                 f'{samples_per_s:,.1f}', f'{sample_compile:.1f}'] + extra)
    print(f'{name}: {steps_per_s:.2f} steps/s, compile {step_compile:.1f} s; '
          f'{samples_per_s:.1f} samples/s, sampler compile {sample_compile:.1f} s', flush=True)
  print(f'machine: {benchlib.machine()}')
  benchlib.table(['family (config)', 'data', 'batch', 'train steps/s', 'examples/s',
                  'step compile s', f'<= {TARGET_COMPILE_S:.0f} s', 'samples/s',
                  'sampler compile s']
                 + ([f'steps/s at {k} per call', 'speed-up', 'compile s'] if k > 1 else []), rows)


def against_pmap(names, smoke, steps, per_call, rounds):
  """Each config's train step on the trainer's wrappers (jit of shard_map over
  a mesh) and on jax.pmap, in alternating rounds: steps/s of each."""
  import pmap_reference  # pylint: disable=g-import-not-at-top
  rows = []
  for spec in names.split(','):
    name, _, variant = spec.partition(':')
    config, variant = default_config(name, smoke, variant)
    data, family, state = benchlib.family_setup(config)
    for k in sorted({1, per_call}):
      runners = [benchlib.step_runner(family, state, data, k),
                 benchlib.step_runner(family, state, data, k, pmap_reference)]
      for one in runners:
        benchlib.first_call(one)
      mesh, pmap = benchlib.interleaved_steps_per_s(runners, -(-steps // k), rounds)
      mesh, pmap = mesh * k, pmap * k
      rows.append([f'{name} ({variant})', k, f'{mesh:.2f}', f'{pmap:.2f}', f'{mesh / pmap:.3f}'])
      print(f'{name}, {k} per call: mesh {mesh:.2f}, pmap {pmap:.2f} steps/s', flush=True)
  print(f'machine: {benchlib.machine()}')
  benchlib.table(['family (config)', 'steps per call', 'mesh steps/s', 'pmap steps/s',
                  'mesh / pmap'], rows)


if __name__ == '__main__':
  main()
