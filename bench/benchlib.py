"""What the bench/ scripts share: timing, the machine line, the family step
timer, and a markdown table printer. Not a benchmark itself."""
import datetime
import os
import platform
import resource
import time

import jax
import numpy as np


def timeit(fn, steps, warmup=1, rounds=3):
  """Seconds per call of `fn`: the best of `rounds` rounds of `steps` calls
  (best, not mean: the machine is shared, and noise only ever adds time)."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  best = float('inf')
  for _ in range(rounds):
    t = time.perf_counter()
    for _ in range(steps):
      out = fn()
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t) / steps)
  return best


def page_faults():
  """Minor page faults of this process so far (memory touched for the first
  time since it was mapped; see genjax.hostmem)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def first_call(fn):
  """(seconds of the first call, its output): compilation plus one run."""
  t = time.perf_counter()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - t, out


def machine():
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  dev = jax.devices()[0]
  return (f'{datetime.date.today()}; {dev.device_kind} x{jax.local_device_count()} '
          f'({jax.default_backend()}); host: {cpu}, {len(os.sched_getaffinity(0))} cores; '
          f'jax {jax.__version__}')


def table(header, rows):
  """Prints a markdown table (the form bench/README.md holds)."""
  print('| ' + ' | '.join(header) + ' |')
  print('|' + '|'.join('---' for _ in header) + '|')
  for row in rows:
    print('| ' + ' | '.join(str(x) for x in row) + ' |')


def verdict(value, target, higher_is_better=True):
  met = value >= target if higher_is_better else value <= target
  return 'met' if met else 'missed'


def family_setup(config):
  """(data, family, initial state) for a config, as the trainer builds them."""
  from genjax import families  # pylint: disable=g-import-not-at-top
  from genjax.data import Dataset  # pylint: disable=g-import-not-at-top
  data = Dataset(config.data, seed=config.seed)
  family = families.build(config, data.info)
  state = family.init(jax.random.PRNGKey(config.seed), data.train_batch(0))
  return data, family, state


def step_runner(family, state, data, per_call=1, wrappers=None):
  """A no-argument callable that runs the next train step (or `per_call` steps
  in one device call), over the trainer's wrappers (genjax.parallel) or
  another module with the same five functions (bench/pmap_reference.py), on
  distinct real batches read before any timing."""
  if wrappers is None:
    from genjax import parallel as wrappers  # pylint: disable=g-import-not-at-top
  holder = [wrappers.replicate(state), 0]
  if per_call > 1:
    fn = wrappers.train_steps(family.train_step)
    batches = [wrappers.shard_steps([data.train_batch(i * per_call + j) for j in range(per_call)])
               for i in range(2)]

    def one():
      step_ids = np.arange(per_call, dtype=np.int32) + holder[1] * per_call
      holder[0], metrics = fn(holder[0], batches[holder[1] % 2], jax.random.PRNGKey(0), step_ids)
      holder[1] += 1
      return metrics
  else:
    fn = wrappers.train_step(family.train_step)
    batches = [wrappers.shard(data.train_batch(i)) for i in range(4)]

    def one():
      holder[0], metrics = fn(holder[0], batches[holder[1] % len(batches)],
                              jax.random.PRNGKey(holder[1]))
      holder[1] += 1
      return metrics
  return one


def train_step_cost(family, state, data, steps, rounds=3, per_call=1, wrappers=None):
  """(compile seconds of the train step, steps/second after it), on distinct
  real batches read before timing (the loader is timed on its own).
  per_call > 1: that many steps per device call (train.steps_per_call), and
  `steps` rounded up to a multiple of it."""
  one = step_runner(family, state, data, per_call, wrappers)
  compile_s, _ = first_call(one)
  dt = timeit(one, -(-steps // per_call), warmup=1, rounds=rounds)
  return max(compile_s - dt, 0.0), per_call / dt


def interleaved_steps_per_s(runners, steps, rounds=3):
  """Steps/second of each no-argument step runner (compiled already), timed in
  alternating rounds so that a change in the machine's load hits all alike;
  the best round of each."""
  best = [float('inf')] * len(runners)
  for _ in range(rounds):
    for i, one in enumerate(runners):
      best[i] = min(best[i], timeit(one, steps, warmup=1, rounds=1))
  return [1 / dt for dt in best]


def sample_cost(family, state, num_samples, **kwargs):
  """(compile seconds of the sampler, samples/second after it)."""
  rng = jax.random.PRNGKey(0)
  compile_s, _ = first_call(lambda: family.sample(state, rng, num_samples, **kwargs))
  dt = timeit(lambda: family.sample(state, rng, num_samples, **kwargs), 1, warmup=0, rounds=2)
  return max(compile_s - dt, 0.0), num_samples / dt


def fmt(x, digits=3):
  if isinstance(x, str):
    return x
  if not np.isfinite(x):
    return 'n/a'
  return f'{x:.{digits}g}' if abs(x) < 1000 else f'{x:,.0f}'
