"""Diffusion sampling on digits: the compiled `lax.scan` sampler against a
Python loop over the same step function at T = 1000, and DDIM at 10, 25, 50,
100 and 250 steps against DDPM at 1000, in time and in sample quality.

  python bench/diffusion_sampling.py    # trains the digits default for 800 steps first
                                        # (about 2 min; reused when its workdir holds it)
  python bench/diffusion_sampling.py --smoke   # tiny: checks the script runs (the suite does)

The model is `experiments/diffusion.py:digits` (U-Net, classifier-free guidance:
two network passes per step), trained by genjax's trainer into --workdir. Quality
is measured as the comparison measures it (`genjax.evals.reference`):
Frechet distance in the feature space of the cached digits classifier, k-NN
precision and recall against as many train images, and the entropy of the
classifier's labels, on --num_samples samples per sampler (at most the
held-out count); the last row measures held-out images the same way.
"""
import argparse
import os

import jax
import jax.numpy as jnp

import benchlib
from genjax.experiments import diffusion as diffusion_config
from genjax import run, train
from genjax.evals import reference
from genjax.families.diffusion import samplers


def python_loop_sampler(family, state, sample_cfg, shape, num):
  """DDPM over all T steps as a Python loop of one jitted step (the body of the
  compiled sampler's scan): one dispatch per step. Returns rng -> x_0."""
  sched = family.tools['schedule']
  label = jnp.arange(num, dtype=jnp.int32) % 10
  predict, _ = samplers.guided(family.tools['apply'], state.ema_params, label,
                               sample_cfg.guidance, 10, 10)  # digits: 10 classes, null label 10
  step = jax.jit(samplers.ddpm_step(predict, sched, sample_cfg.variance, sample_cfg.clip))
  ts = [jnp.asarray(t) for t in range(sched.num_steps, 0, -1)]

  def run_loop(rng):
    k_init, k_run = jax.random.split(rng)
    z = jax.random.normal(k_init, (num,) + tuple(shape))
    for t, key in zip(ts, jax.random.split(k_run, len(ts))):
      z, _ = step(z, (t, key))
    return z

  return run_loop


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--workdir', default='/tmp/genjax_bench/diffusion_digits')
  p.add_argument('--train_steps', type=int, default=800)
  p.add_argument('--num_samples', type=int, default=200, help='samples for quality and speed')
  p.add_argument('--loop_batch', default='1,16', help='batch sizes of the compiled-vs-loop timing')
  p.add_argument('--ddim_steps', default='10,25,50,100,250')
  p.add_argument('--smoke', action='store_true')
  args = p.parse_args()
  config = diffusion_config.get_config('digits' + (',smoke' if args.smoke else ''))
  loop_batches = [int(b) for b in args.loop_batch.split(',')]
  ddim = [int(n) for n in args.ddim_steps.split(',')]
  if args.smoke:  # the smoke config's own steps: the train step other runs compiled
    args.train_steps, args.num_samples, loop_batches, ddim = config.train.num_steps, 16, [2], [2]
  config.train.num_steps = args.train_steps
  config.train.progress_bar = False
  config.evals = type(config.evals)()  # the bench measures its own samples
  ex = run.experiment(config, args.workdir)
  family, state = ex.family, train.train_and_evaluate(ex).state
  T = family.tools['schedule'].num_steps

  # 1. Compiled scan against the Python loop, the same step, DDPM over all T.
  loop_rows = []
  for B in loop_batches:
    gen = lambda B=B: family.sample(state, jax.random.PRNGKey(0), B, sampler='ddpm')
    scan_compile, _ = benchlib.first_call(gen)
    dt_scan = benchlib.timeit(gen, 1, warmup=0, rounds=2)  # best of 2, as the loop's
    loop = python_loop_sampler(family, state, config.sample, ex.data.info.shape, B)
    dt_loop = benchlib.timeit(lambda: loop(jax.random.PRNGKey(0)), 1, warmup=1, rounds=2)
    loop_rows.append([B, f'{dt_scan:.2f}', f'{dt_loop:.2f}', f'{dt_loop / dt_scan:.1f}x',
                      f'{1e3 * (dt_loop - dt_scan) / T:.2f}', f'{scan_compile - dt_scan:.1f}'])
    print(f'batch {B}: scan {dt_scan:.2f} s, Python loop {dt_loop:.2f} s per {T}-step sample run',
          flush=True)

  # 2. DDIM step counts against DDPM, in time and quality.
  ref = reference.Reference(ex.data, config, args.num_samples, reps=20)
  rows = []
  for label, kwargs, evals in family.tools['sampler_settings'](tuple(ddim)):
    # Two calls: the first compiles; the second is timed and its samples are measured.
    first, _ = benchlib.first_call(lambda: family.sample(state, jax.random.PRNGKey(6),
                                                         ref.num, **kwargs))
    dt, samples = benchlib.first_call(lambda: family.sample(state, jax.random.PRNGKey(7),
                                                            ref.num, **kwargs))
    compile_s, per_s = max(first - dt, 0.0), ref.num / dt
    q = ref.measure(samples)
    rows.append([label, evals, f'{per_s:,.1f}', f'{compile_s:.1f}', f'{q["fd"]:.2f}',
                 f'{q["precision"]:.3f}', f'{q["recall"]:.3f}', f'{q["entropy"]:.3f}'])
    print(f'{label}: {per_s:.1f} samples/s, FD {q["fd"]:.2f}', flush=True)
  real = ref.data_row()
  rows.append(['held-out images', '-', '-', '-', f'{real["fd"]:.2f}', f'{real["precision"]:.3f}',
               f'{real["recall"]:.3f}', f'{real["entropy"]:.3f}'])

  print(f'machine: {benchlib.machine()}')
  print(f'model: experiments/diffusion.py:digits, {ex.step} train steps, T={T}, '
        f'guidance {config.sample.guidance}, in {os.path.abspath(args.workdir)}')
  benchlib.table(['batch', 'compiled scan s', 'Python loop s', 'speed-up',
                  'loop overhead ms/step', 'scan compile s'], loop_rows)
  print()
  benchlib.table(['sampler', 'network evals/sample', 'samples/s', 'compile s', 'FD',
                  'precision', 'recall', 'label entropy'], rows)


if __name__ == '__main__':
  main()
