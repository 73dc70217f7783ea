"""What launch.py's modes do, importable from notebooks."""
import json

import jax

from genjax import parallel, train, writers


def main(config, workdir, mode='train', split=None):
  if mode == 'train':
    print(f'genjax: {config.family} on {config.data.name}, {jax.device_count()} device(s) '
          f'({jax.default_backend()}); workdir {workdir}', flush=True)
    ex = train.Experiment(config, workdir)
    metrics = train.train_and_evaluate(config, workdir, ex)
    if 'stopped_by' in metrics:
      return metrics
    print('final eval:', json.dumps(metrics), flush=True)
    if config.sample.num_samples > 0:
      _print_samples(ex, ex.state)
    print(f'results in {workdir}: metrics.jsonl, tb/, samples/, checkpoints/', flush=True)
    return metrics
  ex = train.Experiment(config, workdir)
  if ex.checkpointer.latest_step is None:
    raise FileNotFoundError(f'no checkpoint in {workdir}; train first with --mode=train')
  if mode == 'eval':
    rstate = parallel.replicate(ex.state)
    metrics = ex.evaluate(rstate, split=split)
    print(f'eval on {split or config.data.eval_split} at step {ex.step}:', json.dumps(metrics))
    return metrics
  if mode == 'sample':
    return _print_samples(ex, ex.state)
  raise ValueError(f'unknown mode {mode!r}')


def _print_samples(ex, state):
  if jax.process_index() != 0:
    return None
  if ex.last_samples is not None:  # training just wrote this step's samples
    samples, path = ex.last_samples
  else:
    samples, path = ex.sample(state, ex.step, tag=f'sample_step_{ex.step:07d}')
  if ex.data.info.modality == 'text':
    for i, text in enumerate(writers.decode_text(samples[:2])):
      print(f'----- sample {i} -----\n{text}')
  print(f'samples written to {path}', flush=True)
  return samples
