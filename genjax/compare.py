"""The comparison: every family trained on one dataset at one training
compute, then measured with the same metrics, N seeds each.

`main(config, workdir)` runs what `experiments/compare.py` describes: for each
entry and seed, the family's own experiment config with the comparison's seed,
dataset and budget, in `workdir/<entry>/seed_<k>`; then it measures every
model's samples against one reference (genjax.evals.reference) and writes the
report (genjax.compare_report): report.md, report.json, samples.png,
curves.png, cost.png.

The budget is compute, not time: each family's train step is counted once
(genjax.flops) and the step count follows, so every number in the report but
the times and rates is the same on every run of the same command on a CPU.
"""
import dataclasses
import functools
import importlib
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from genjax import compare_report, flops, run, sweep, train
from genjax.data import Dataset
from genjax.evals import quality, reference, text


def family_config(label, entry, c, seed):
  """The entry's experiment config under the comparison's seed, data and evaluations."""
  family = entry.get('family') or label
  module = importlib.import_module(f'genjax.experiments.{family}')
  config = module.get_config(entry.variant + (',smoke' if c.smoke else ''))
  config.seed = seed
  config.data.name = c.dataset
  config.data.data_dir, config.data.download = c.data.data_dir, c.data.download
  if c.eval_batch_size:
    config.data.eval_batch_size = c.eval_batch_size
  config.train.max_seconds = c.budget_seconds
  config.train.progress_bar = False
  config.train.log_every = min(config.train.log_every, 20)  # enough points for the curves
  config.sample.num_samples = 0  # the comparison draws its own
  # Samples are measured here; the likelihood evaluators stay (validation selects the
  # model, the test split is measured on the selected one).
  for key in list(config.evals.keys()):
    if config.evals[key].kind != 'likelihood':
      del config.evals[key]
  # The reported likelihood is the 'test' evaluator's: where the test split is only
  # evaluated under another name (a dataset without a validation split), it is added.
  if 'test' not in config.evals and any(e.get('split') == 'test' for e in config.evals.values()):
    config.evals.test = ml_collections.ConfigDict(dict(kind='likelihood', split='test', every=0))
  source = f'experiments/compare.py families.{label}.overrides'
  for overrides in sweep.parse(entry.get('overrides', ''), source)[:1]:
    config = sweep.apply(config, overrides, source)
  return config


def budgeted(config, c):
  """(config with its step count and validation cadence set by the budget,
  FLOPs of one train step)."""
  data, family = run.dataset_and_family(config)
  per_step = flops.train_step(family, data.train_batch(0))
  if c.budget_flops > 0:
    steps = max(1, int(round(c.budget_flops / per_step)))
    config.train.num_steps = min(steps, config.train.num_steps) if c.cap_steps else steps
  if 'validation' in config.evals:
    config.evals.validation.every = max(config.train.num_steps // c.validations, 1)
    config.train.select = 'validation/bpd'
  return config, per_step


def draw(sample_fn, state, num, rng, timing_batch):
  """(samples, samples/s, compile seconds). The samples are those of one call
  with `num`; the speed is timed on a second call with `timing_batch` samples
  (after a first call of that size, whose extra time is the compilation)."""
  samples = sample_fn(state, rng, num)
  jax.block_until_ready(jax.tree_util.tree_leaves(samples))
  n, seconds = min(timing_batch, num), []
  for i in range(1 if n == num else 2):
    key = jax.random.fold_in(rng, i + 1)
    t = time.perf_counter()
    jax.block_until_ready(jax.tree_util.tree_leaves(sample_fn(state, key, n)))
    seconds.append(time.perf_counter() - t)
  compile_s = seconds[0] - seconds[1] if len(seconds) == 2 else float('nan')
  return samples, n / seconds[-1], max(compile_s, 0.0)


def counted_evals(tools, state, rng, num):
  """Network evaluations per sample of a sampler whose cost is known only once
  it has drawn (an adaptive ODE solver): the family's `draw` tool counts them,
  on the same key and number as the measured samples. None without one."""
  if 'draw' not in tools:
    return None
  return tools['draw'](state, rng, num)[1]


def roughness(records, headline):
  """Std of the step-to-step change of the logged headline loss over the second
  half of training, over its mean absolute value."""
  values = [r[headline] for r in records if r['split'] == 'train' and headline in r]
  half = np.asarray(values[len(values) // 2:], np.float64)
  if len(half) < 3 or not np.all(np.isfinite(half)):
    return float('nan')
  return float(np.std(np.diff(half)) / max(np.mean(np.abs(half)), 1e-12))


def records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _likelihood(final, text):
  """The reported likelihood metric of a run and its interval keys: text, the
  whole validation split in nats/byte; images bits/dim and points nats, test."""
  if text:
    got = final.get('validation', {})
    return {out: got[key] for key, out in (('nll_per_dim', 'nats_per_byte'),
                                           ('nll_per_dim_lo', 'nats_per_byte_lo'),
                                           ('nll_per_dim_hi', 'nats_per_byte_hi')) if key in got}
  got = final.get('test', {})
  key = 'bpd' if 'bpd' in got else 'nll'
  out = {k: got[k] for k in (key, f'{key}_lo', f'{key}_hi') if k in got}
  if 'bpd_ode' in got:  # a second likelihood, by the probability-flow ODE, beside the first
    out['bpd_ode'] = got['bpd_ode']
  return out


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained entry: its family's functions, its dataset, its final state."""
  family: Any
  data: Any
  state: Any


def run_one(label, entry, c, seed, workdir, num_samples):
  """Trains one entry with one seed; returns (row, samples drawn, Trained),
  or ({'stopped_by': ...}, None, None) after a SIGTERM."""
  config, per_step = budgeted(family_config(label, entry, c, seed), c)
  ex = run.experiment(config, workdir)
  result = train.train_and_evaluate(ex)
  if result.stopped_by:
    return {'stopped_by': result.stopped_by, 'step': result.step}, None, None
  final, state = result.metrics, result.state
  log = records(workdir)
  trained = [r for r in log if r['split'] == 'train']
  steps = trained[-1]['step'] if trained else result.step
  tools = ex.family.tools
  row = {'label': label, 'family': ex.family.name, 'seed': seed, 'steps': steps,
         'flops_per_step': float(per_step), 'train_flops': float(per_step) * steps,
         'workdir': workdir, 'selected_step': final.get('selected', {}).get('step', steps),
         'headline': ex.family.headline, 'likelihood': ex.family.likelihood,
         'likelihood_note': ex.family.likelihood_note,
         'network_evals': tools.get('network_evals'),
         'train_s': trained[-1]['elapsed_s'] if trained else float('nan'),
         'roughness': roughness(log, ex.family.headline)}
  row.update(_likelihood(final, ex.data.info.modality == 'text'))
  rng = jax.random.fold_in(jax.random.PRNGKey(seed), 0xC0)
  samples, row['samples_per_s'], row['sample_compile_s'] = draw(
      ex.family.sample, state, num_samples, rng, c.cost.timing_batch)
  if row['network_evals'] is None:
    row['network_evals'] = counted_evals(tools, state, rng, num_samples)
  drawn = {'main': samples, 'points': []}
  row['cost_points'] = []
  settings = tools.get('sampler_settings')
  counts = c.cost.text_steps if ex.data.info.modality == 'text' else c.cost.ddim_steps
  for name, kwargs, evals in settings(tuple(counts), c.cost.full_chain) if settings else []:
    extra, per_s, _ = draw(functools.partial(ex.family.sample, **kwargs), state, num_samples,
                           rng, c.cost.timing_batch)
    print(f'compare: {label} {name}: {per_s:.1f} samples/s', flush=True)
    row['cost_points'].append({'sampler': name, 'kwargs': kwargs, 'network_evals': evals,
                               'samples_per_s': per_s})
    drawn['points'].append(extra)
  return row, drawn, Trained(ex.family, ex.data, state)


def measure(row, drawn, ex, ref, scorer, reps):
  """Adds every sample metric to the row and its cost points."""
  row.update(ref.measure(drawn['main'], scorer))
  for point, extra in zip(row['cost_points'], drawn['points']):
    point.update(ref.measure(extra, scorer))
  key = next(iter(drawn['main']))
  if key == 'tokens':
    row['text_samples'] = {row['label']: _text(drawn['main']['tokens'])}
    for point, extra in zip(row['cost_points'], drawn['points']):
      row['text_samples'][f"{row['label']}, {point['sampler']}"] = _text(extra['tokens'])
  position_nll = ex.family.tools.get('position_nll')
  if position_nll is not None and ref.kind == 'image':
    row.update(drift(position_nll(ex.state, drawn['main']), position_nll(ex.state,
                                                                          {key: ref.held}), reps))


def drift(nll_samples_NxT, nll_data_MxT, reps):
  """How the model's NLL of its own samples, minus that of held-out data, changes
  from the first quarter of positions to the last (nats per position), with a
  bootstrap interval over the samples."""
  gap = np.asarray(nll_samples_NxT, np.float64) - np.asarray(nll_data_MxT, np.float64).mean(0)
  q = max(gap.shape[1] // 4, 1)
  per_sample = gap[:, -q:].mean(1) - gap[:, :q].mean(1)
  lo, hi = quality.bootstrap(lambda idx: per_sample[idx].mean(), len(per_sample), reps, seed=12)
  return {'drift': float(per_sample.mean()), 'drift_lo': float(lo), 'drift_hi': float(hi),
          'position_gap': gap.mean(0).tolist()}


def _text(tokens, num=8):
  return [bytes(np.asarray(row, np.uint8)).decode('utf-8', 'replace') for row in tokens[:num]]


def main(config, workdir, command='python launch.py'):
  os.makedirs(workdir, exist_ok=True)
  only = [n for n in config.only.split(',') if n]
  entries = [(label, entry) for label, entry in config.families.items()
             if not only or label in only]
  # What every family's samples are measured against, from the first entry's dataset.
  ref_config = family_config(*entries[0], config, 0)
  ref = reference.Reference(Dataset(ref_config.data, seed=0), ref_config,
                            config.quality.num_samples, config.quality.bootstrap,
                            config.quality.classifier.to_dict())
  runs = []
  for label, entry in entries:
    for seed in range(config.seeds):
      wd = os.path.join(workdir, label, f'seed_{seed}')
      print(f'compare: {label}, seed {seed} -> {wd}', flush=True)
      row, drawn, ex = run_one(label, entry, config, seed, wd,
                               ref.num or config.quality.num_samples)
      if drawn is None:
        print('compare: stopped; the same command resumes (finished runs are only re-measured)',
              flush=True)
        return row
      runs.append((row, drawn, ex))
  # Text is scored by an exact-likelihood model of it, once every model is trained.
  scorer = next((ex for _, _, ex in runs
                 if ex.family.likelihood == 'exact' and ex.data.info.modality == 'text'), None)
  for row, drawn, ex in runs:
    measure(row, drawn, ex, ref, scorer, config.quality.bootstrap)
    print('compare: ' + json.dumps({k: v for k, v in row.items() if k not in (
        'workdir', 'text_samples', 'cost_points', 'position_gap')}), flush=True)
  rows = [r for r, _, _ in runs]
  data_row = ref.data_row(scorer)
  claims = {}
  for _, _, ex in runs:
    claim = ex.family.tools.get('claim')
    if claim is not None and ex.family.name not in claims:
      claims[ex.family.name] = claim
  samples = {r['label']: d['main'] for r, d, _ in runs if r['seed'] == 0}
  return compare_report.write(workdir, config, rows, data_row, claims, samples,
                              ref.held if ref.kind == 'image' else None, runs[0][2].data.info,
                              command, cross_scores(runs, ref) if ref.kind == 'text' else None)


def cross_scores(runs, ref):
  """{model: {text set: nats/byte}}: every text model with a likelihood scoring
  the held-out windows and each model's samples (seed 0)."""
  sets = {'validation text': ref.held}
  sets.update({f"{r['label']} samples": d['main']['tokens'] for r, d, _ in runs if r['seed'] == 0})
  return {r['label']: {name: float(np.mean(text.nll_per_byte(ex.family, ex.state, tokens)))
                       for name, tokens in sets.items()}
          for r, _, ex in runs if r['seed'] == 0 and ex.family.likelihood != 'none'}
