"""What launch.py's modes do, importable from notebooks.

`main` builds the dataset and the family and hands both to the trainer. A
notebook can pass `build_family`, any `(config, info) -> Family`, to train a
family it defines without registering it.
"""
import json
import os

import jax

from genjax import config_check, families, parallel, train, writers
from genjax.data import Dataset
from genjax.errors import ConfigError, MissingCheckpointError

DETERMINISTIC_FLAG = '--xla_gpu_deterministic_ops=true'
MODES = ('train', 'sample', 'eval')


def xla_flags(config, environ=os.environ):
  """Adds the XLA flags the config asks for to `environ`; call before jax starts.

  `config.deterministic` makes GPU reductions and scatter-adds deterministic,
  so that a resumed run equals an uninterrupted one there too (the CPU is
  deterministic already).
  """
  if config.get('deterministic', False) and DETERMINISTIC_FLAG not in environ.get('XLA_FLAGS', ''):
    environ['XLA_FLAGS'] = (environ.get('XLA_FLAGS', '') + ' ' + DETERMINISTIC_FLAG).strip()


def _check_backend(config):
  if (config.get('deterministic', False) and jax.default_backend() == 'gpu'
      and DETERMINISTIC_FLAG not in os.environ.get('XLA_FLAGS', '')):
    raise ConfigError(f'deterministic=True needs XLA_FLAGS={DETERMINISTIC_FLAG} before JAX starts '
                      '(launch.py sets it; in a notebook, call genjax.run.xla_flags(config) before '
                      'the first JAX computation)')


def dataset_and_family(config, build_family=None):
  """The config checked, its dataset opened and checked against it, its family built."""
  config_check.check(config)
  _check_backend(config)
  data = Dataset(config.data, seed=config.seed)
  config_check.check_data(config, data.info, jax.local_device_count())
  return data, (build_family or families.build)(config, data.info)


def experiment(config, workdir, build_family=None, record=True):
  """`record=False` (evaluating or sampling): the workdir's config.json stays
  the training run's."""
  data, family = dataset_and_family(config, build_family)
  return train.Experiment(config, workdir, data, family, record)


def main(config, workdir, mode='train', split=None, build_family=None):
  """What launch.py does; returns the final metrics ({'stopped_by': ...} after a SIGTERM)."""
  if mode not in MODES:
    raise ConfigError(f"unknown mode {mode!r}; use 'train', 'eval' or 'sample'")
  if mode != 'train':  # refused before the workdir is written to, a bad value named first
    config_check.check(config)
  if mode != 'train' and not has_checkpoint(workdir):
    raise MissingCheckpointError(f'no checkpoint in {workdir}; train first with --mode=train '
                                 '(the same command without --mode)')
  ex = experiment(config, workdir, build_family, record=mode == 'train')
  if mode == 'train':
    print(f'genjax: {ex.family.name} on {config.data.name}, {jax.device_count()} device(s) '
          f'({jax.default_backend()}); workdir {workdir}', flush=True)
    result = train.train_and_evaluate(ex)
    if result.stopped_by:
      return {'stopped_by': result.stopped_by, 'step': result.step}
    print('final:', json.dumps(result.metrics), flush=True)
    if result.samples is not None:  # training just wrote this step's samples
      _print_samples(result.samples, result.samples_path)
    elif config.sample.num_samples > 0 and jax.process_index() == 0:
      _print_samples(*sample(ex, result.state, result.step))
    print(f'results in {workdir}: metrics.jsonl, tb/, samples/, checkpoints/', flush=True)
    return result.metrics
  if ex.checkpointer.latest_step is None:
    raise MissingCheckpointError(f'no checkpoint in {workdir}; train first with --mode=train')
  state = ex.start_state
  best = ex.checkpointer.best() if config.train.get('select') else None
  if best is not None:  # the model selected in training (train.select)
    state = ex.checkpointer.restore_best(state)
    print(f'using step {best["step"]}, selected on {best["metric"]} = {best["value"]:.4f}',
          flush=True)
  if mode == 'eval':
    split = split or config.data.eval_split
    metrics = ex.evaluate(ex.place(state), split=split)
    print(f'eval on {split} at step {ex.step}:', json.dumps(metrics))
    return metrics
  state = parallel.unreplicate(state)  # on every host: a split leaf is gathered
  if jax.process_index() != 0 or config.sample.num_samples <= 0:  # mode == 'sample'
    return None
  samples, path = sample(ex, state, ex.step)
  _print_samples(samples, path)
  return samples


def sample(ex, state, step):
  """Draws config.sample.num_samples as `Experiment.sample` does (the same key),
  and writes them under a name and a title that carry the sampler's settings,
  so that a second --mode=sample with other settings keeps the first's file."""
  config = ex.config
  settings = writers.sampler_settings(config.sample)
  samples = ex.family.sample(state, ex.stream('sample', step), config.sample.num_samples)
  data = None
  if ex.data.info.modality == 'points':  # drawn beneath the samples
    batch = next(ex.data.eval_batches(max_batches=1))
    data = batch['x'][batch['mask']]
  title = (f'{ex.family.name} on {config.data.name}, step {step}: '
           + ', '.join(f'{k}={v}' for k, v in settings.items()))
  path = writers.write_samples(os.path.join(ex.workdir, 'samples'), sample_name(step, settings),
                               samples, ex.data.info, data, title=title)
  return samples, path


def sample_name(step, settings):
  """'sample_step_0000004_decode=mean,num_samples=64' (see writers.settings_name)."""
  return f'sample_step_{step:07d}_{writers.settings_name(settings)}'


def has_checkpoint(workdir):
  """Whether `workdir` holds a finished checkpoint (orbax names each by its step),
  judged without writing anything."""
  d = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(d) and any(s.isdigit() for s in os.listdir(d))


def _print_samples(samples, path):
  if 'tokens' in samples:
    for i, text in enumerate(writers.decode_text(samples['tokens'][:2])):
      print(f'----- sample {i} -----\n{text}')
  print(f'samples written to {path}', flush=True)
