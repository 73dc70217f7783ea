"""What the multi-host stop check costs per training step: two processes on
this machine as two hosts (jax.distributed over 127.0.0.1, 2 CPU devices
each), training the same config with the check at every step (what genjax did
before train.stop_check_every), every train.stop_check_every steps (the
default), and never.

  python bench/stop_check.py    # the AR smoke model, 200 steps, 3 rounds

--family picks another family's smoke model (its steps are slower to compile
on two processes: diffusion's take about two minutes); --smoke runs 12 steps
and 1 round, which checks that the script runs.

The check is an all-gather of each host's stop flags (SIGTERM, max_seconds)
that waits for every host, and so for the steps already dispatched. Printed per
process and variant: ms per step after the compile (median over rounds, the
variants taking turns) and the ms per step spent inside the check.
"""
import argparse
import importlib
import inspect
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

# Each process (and this one, for the machine line) sees 2 CPU devices, under
# whatever other XLA flags the caller set.
os.environ.update(JAX_PLATFORMS='cpu', XLA_FLAGS=(
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2').strip())
import benchlib  # pylint: disable=g-import-not-at-top,wrong-import-position

VARIANTS = ('every step', 'every stop_check_every (default)', 'never')


def child(args):
  # pylint: disable=g-import-not-at-top
  import jax
  import ml_collections
  import numpy as np

  from genjax import parallel, run, train

  parallel.initialize_hosts(args.coordinator, 2, args.process_id)
  module = importlib.import_module(f'genjax.experiments.{args.family}')
  default = inspect.signature(module.get_config).parameters['arg'].default
  real_agreed = train._StopOnSignal.agreed  # pylint: disable=protected-access
  runs = {label: ([], []) for label in VARIANTS}
  for r in range(args.rounds):
    for label in VARIANTS:
      config = module.get_config(f'{default},smoke')
      config.evals = ml_collections.ConfigDict()
      config.train.num_steps, config.train.log_every = args.steps, max(args.steps // 10, 1)
      config.train.checkpoint_every, config.train.max_seconds = 0, 0
      every = config.train.stop_check_every
      if label == 'every step':
        config.train.stop_check_every = 1
      ex = run.experiment(config, os.path.join(args.out, f'{args.family}_{r}_{VARIANTS.index(label)}'))
      stamps, in_check, real_step = [], [], ex.p_train

      def agreed(stop, step, late=False, label=label):
        t = time.perf_counter()
        out = (stop.requested is not None, late) if label == 'never' else real_agreed(
            stop, step, late)
        in_check.append(time.perf_counter() - t)
        return out

      def step(rstate, batch, rng, real_step=real_step, stamps=stamps):
        rstate, metrics = real_step(rstate, batch, rng)
        if len(stamps) == args.steps - 1:
          jax.block_until_ready(rstate)
        stamps.append(time.perf_counter())
        return rstate, metrics

      train._StopOnSignal.agreed, ex.p_train = agreed, step  # pylint: disable=protected-access
      try:
        train.train_and_evaluate(ex)
      finally:
        train._StopOnSignal.agreed = real_agreed  # pylint: disable=protected-access
      skip = max(args.steps // 5, 1)  # the compile and warm-up
      runs[label][0].append(1e3 * (stamps[-1] - stamps[skip]) / (len(stamps) - 1 - skip))
      runs[label][1].append(1e3 * float(np.mean(in_check[skip:])))
  result = {'every': every, 'variants': {
      label: {'ms_per_step': float(np.median(a)), 'check_ms': float(np.median(b)), 'runs': a}
      for label, (a, b) in runs.items()}}
  with open(os.path.join(args.out, f'result_p{args.process_id}.json'), 'w') as f:
    json.dump(result, f)


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--family', default='autoregressive')
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--smoke', action='store_true')
  parser.add_argument('--coordinator', default='')
  parser.add_argument('--process_id', type=int, default=-1)
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  if args.smoke:
    args.steps, args.rounds = 12, 1
  if args.process_id >= 0:
    return child(args)

  out = tempfile.mkdtemp(prefix='genjax_stop_check_')
  port = free_port()
  env = dict(os.environ)
  procs = []
  for i in range(2):
    log = open(os.path.join(out, f'p{i}.log'), 'w')
    procs.append(subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), f'--family={args.family}',
         f'--steps={args.steps}', f'--rounds={args.rounds}', f'--coordinator=127.0.0.1:{port}',
         f'--process_id={i}', f'--out={out}'], env=env, stdout=log, stderr=subprocess.STDOUT))
  if any(p.wait() for p in procs):
    sys.exit(f'a process failed; see {out}/p0.log and p1.log')
  print(benchlib.machine())
  print(f'2 processes on 127.0.0.1 x 2 CPU devices, {args.family} smoke config, {args.steps} steps, '
        f'{args.rounds} round(s)\n')
  rows = []
  for i in range(2):
    with open(os.path.join(out, f'result_p{i}.json')) as f:
      result = json.load(f)
    never = result['variants']['never']['ms_per_step']
    for label, v in result['variants'].items():
      label = label.replace('stop_check_every', str(result['every']))
      rows.append([str(i), label, f'{v["ms_per_step"]:.2f}', f'{v["ms_per_step"] - never:+.2f}',
                   f'{v["check_ms"]:.3f}', ', '.join(f'{x:.1f}' for x in v['runs'])])
  benchlib.table(['process', 'stop check', 'ms/step', 'vs never', 'ms/step in the check',
                  'runs (ms/step)'], rows)
  print('\n' + ' '.join(['python', 'bench/stop_check.py'] + sys.argv[1:]))


if __name__ == '__main__':
  main()
