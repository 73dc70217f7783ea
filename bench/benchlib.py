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


def train_step_cost(family, state, data, steps, rounds=3, per_call=1):
  """(compile seconds of the pmapped train step, steps/second after it), on
  distinct real batches read before timing (the loader is timed on its own).
  per_call > 1: that many steps per device call (train.steps_per_call), and
  `steps` rounded up to a multiple of it."""
  from genjax import parallel  # pylint: disable=g-import-not-at-top
  holder = [parallel.replicate(state), 0]
  if per_call > 1:
    fn = parallel.pmap_train_steps(family.train_step)
    batches = [parallel.shard_steps([data.train_batch(i * per_call + j) for j in range(per_call)])
               for i in range(2)]

    def one():
      step_ids = np.arange(per_call, dtype=np.int32) + holder[1] * per_call
      holder[0], metrics = fn(holder[0], batches[holder[1] % 2], jax.random.PRNGKey(0), step_ids)
      holder[1] += 1
      return metrics
  else:
    fn = parallel.pmap_train_step(family.train_step)
    batches = [parallel.shard(data.train_batch(i)) for i in range(min(steps, 4))]

    def one():
      holder[0], metrics = fn(holder[0], batches[holder[1] % len(batches)],
                              jax.random.PRNGKey(holder[1]))
      holder[1] += 1
      return metrics

  compile_s, _ = first_call(one)
  dt = timeit(one, -(-steps // per_call), warmup=1, rounds=rounds)
  return max(compile_s - dt, 0.0), per_call / dt


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
