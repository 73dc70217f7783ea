"""The comparison: every family trained on one dataset under one budget, then
measured with the same metrics (genjax.evals), N seeds each.

`main(config, workdir)` runs what `experiments/compare.py` describes: for each
family and seed, the family's own experiment config (`experiments/<family>.py`
at the named variant) with the comparison's seed and budget, in
`workdir/<family>/seed_<k>`; then it writes to `workdir`

  report.md   the table (mean +/- std over seeds) with each metric defined under it
  report.json the same numbers, per seed too
  samples.png the families' samples side by side, a row each
  curves.png  each family's training loss against wall time
  cost.png    sample quality (Fréchet distance) against seconds per sample

Every cell comes from a run; a metric a family cannot give is 'n/a'.
"""
import ast
import functools
import importlib
import json
import math
import os
import time
import types

import jax
import numpy as np

from genjax import run, sweep, train, writers
from genjax.evals import classifier, modes, quality

# Metrics in the table: (key, header, definition, format).
COLUMNS = (
    ('bpd', 'test bits/dim', 'negative log-likelihood of the test split in bits per dimension; '
     'exact for the AR model and the flow (the flow\'s is the dequantised bound, valid for the '
     'discrete data), an upper bound for the VAE (IWAE) and diffusion (variational bound), '
     'none for the GAN', '{:.3f}'),
    ('fd', 'FD', 'Fréchet distance between samples and the train split in the feature space of '
     'a small classifier trained on the same split (lower is better)', '{:.2f}'),
    ('precision', 'precision', 'share of samples inside the k-NN (k=3) manifold of the train '
     'split (Kynkäänniemi et al. 2019)', '{:.3f}'),
    ('recall', 'recall', 'share of train examples inside the samples\' k-NN manifold', '{:.3f}'),
    ('entropy', 'class entropy', 'entropy (nats) of the classifier\'s class histogram of the '
     'samples; log 10 = 2.303 is uniform over the digits, 0 is one class only', '{:.3f}'),
    ('nll', 'test NLL (nats)', 'negative log-likelihood of a test point (2-D data: a density, '
     'so it can be negative); exact, bound or none as for bits/dim', '{:.3f}'),
    ('modes', 'modes', 'modes of the mixture with at least one sample within 3 std of its '
     'center', '{:.1f}'),
    ('high_quality', 'high quality', 'share of samples within 3 std of some mode', '{:.3f}'),
    ('kl_uniform', 'KL to uniform', 'KL divergence from the samples\' mode histogram (samples '
     'within 3 std) to the uniform one over the modes', '{:.3f}'),
    ('nats_per_byte', 'validation nats/byte', 'text: negative log-likelihood of the whole '
     'validation split (pysrc has no test split) in nats per byte; exact for the AR model, the '
     'continuous-time ELBO bound for masked diffusion', '{:.3f}'),
    ('ar_nll', 'AR nats/byte of samples', 'text: the trained AR model\'s negative '
     'log-likelihood of the samples (bytes 2..64 given the first), nats per byte; the AR '
     'model\'s own samples and the validation text are the references', '{:.3f}'),
    ('parses', 'parses', 'text: share of samples that `ast.parse` accepts after cutting them '
     'to whole lines (a trailing block opener gets an indented `pass`)', '{:.3f}'),
    ('network_evals', 'net evals / sample', 'network evaluations to draw one sample', '{:.0f}'),
    ('samples_per_s', 'samples/s', 'samples per second after compilation, batches of '
     '`cost.num_samples`, same machine and process', '{:.1f}'),
    ('sample_compile_s', 'sampler compile (s)', 'first sampling call minus a later one',
     '{:.1f}'),
    ('train_s', 'train (s)', 'wall time of the training loop (the budget)', '{:.0f}'),
    ('steps', 'steps', 'training steps reached within the budget', '{:.0f}'),
    ('selected_step', 'selected step', 'the step whose validation bits/dim was lowest (6 '
     'evaluations over the schedule, and the last step); the test split, the samples and '
     'the cost are measured on its model; the last step where there is no likelihood',
     '{:.0f}'),
    ('roughness', 'loss roughness', 'std of the step-to-step change of the logged headline '
     'loss over the second half of training, over its mean absolute value', '{:.3f}'),
)


def family_config(name, fam, c, seed):
  module = importlib.import_module(f'experiments.{name}')
  config = module.get_config(fam.variant + (',smoke' if c.smoke else ''))
  config.seed = seed
  config.data.name = c.dataset
  if 'data' in c:
    config.data.data_dir, config.data.download = c.data.data_dir, c.data.download
  if not c.smoke:
    if fam.num_steps:  # 0: the family config's own schedule length
      config.train.num_steps = fam.num_steps
    config.train.max_seconds = c.budget_seconds
  config.train.progress_bar = False
  config.train.log_every = min(config.train.log_every, 20)  # enough points for the curves
  config.sample.num_samples = 0  # the comparison draws its own
  # The comparison measures samples itself; it keeps the likelihood evaluators:
  # validation at 6 points of the schedule selects the model (train.select), and
  # the test split, the samples and the cost are measured on the selected one.
  for key in list(config.evals.keys()):
    if config.evals[key].kind not in ('likelihood',):
      del config.evals[key]
  if 'validation' in config.evals:
    config.evals.validation.every = max(config.train.num_steps // 6, 1)
    config.train.select = 'validation/bpd'
  source = f'experiments/compare.py families.{name}.overrides'
  for overrides in sweep.parse(fam.get('overrides', ''), source)[:1]:
    config = sweep.apply(config, overrides, source)
  return config


def sampling_cost(family, state, num_samples, repeats=1):
  """(samples/s after compilation, compile seconds, last samples)."""
  rng = jax.random.PRNGKey(0)
  t = time.perf_counter()
  samples = family.sample(state, rng, num_samples)
  first = time.perf_counter() - t
  best = float('inf')
  for i in range(repeats):
    t = time.perf_counter()
    samples = family.sample(state, jax.random.fold_in(rng, i + 1), num_samples)
    jax.block_until_ready(jax.tree_util.tree_leaves(samples))
    best = min(best, time.perf_counter() - t)
  return num_samples / best, max(first - best, 0.0), samples


def roughness(workdir, headline):
  values = [r[headline] for r in _records(workdir) if r['split'] == 'train' and headline in r]
  half = np.asarray(values[len(values) // 2:], np.float64)
  if len(half) < 3 or not np.all(np.isfinite(half)):
    return float('nan')
  return float(np.std(np.diff(half)) / max(np.mean(np.abs(half)), 1e-12))


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def run_one(name, fam, c, seed, workdir, refs=None):
  """Trains one family with one seed and measures it; returns its metrics, its
  samples and its experiment. `refs`: experiments already run ({family: ex}),
  for the text metrics that score samples with the AR model."""
  config = family_config(name, fam, c, seed)
  ex = run.experiment(config, workdir)
  final = train.train_and_evaluate(ex)
  if 'stopped_by' in final:  # SIGTERM: the family's checkpoint is saved
    return final, None, None
  train_records = [r for r in _records(workdir) if r['split'] == 'train']
  steps = train_records[-1]['step'] if train_records else ex.step
  out = {'family': name, 'seed': seed, 'steps': steps, 'workdir': workdir,
         'selected_step': final.get('selected', {}).get('step', steps),
         'headline': ex.family.headline, 'likelihood': ex.family.likelihood,
         'network_evals': ex.family.tools.get('network_evals')}
  test = final.get('test', {})
  if ex.data.info.modality == 'text' and 'nll_per_dim' in final.get('validation', {}):
    out['nats_per_byte'] = final['validation']['nll_per_dim']  # the whole split, at the end
  elif ex.family.likelihood != 'none' and 'bpd' in test:
    out['bpd'] = test['bpd']
  elif ex.family.likelihood != 'none' and 'nll' in test:  # points: no bits/dim
    out['nll'] = test['nll']
  out['train_s'] = train_records[-1]['elapsed_s'] if train_records else float('nan')
  out['roughness'] = roughness(workdir, ex.family.headline)
  out['samples_per_s'], out['sample_compile_s'], samples = sampling_cost(
      ex.family, ex.state, c.cost.num_samples)
  measure = quality_measure(ex, config, (refs or {}).get('autoregressive', ex))
  out.update(measure(samples))
  texts = {}
  if 'tokens' in samples:
    texts[f'{name}'] = text_lines(samples['tokens'])
  if 'image' in samples:
    out['classifier_test_accuracy'] = classifier.load(config.data.name,
                                                      config.data.data_dir).test_accuracy
  # The same model under its other samplers (diffusion: DDIM step counts, DDPM).
  settings = ex.family.tools.get('sampler_settings')
  counts = c.cost.text_steps if ex.data.info.modality == 'text' else c.cost.ddim_steps
  out['cost_points'] = []
  for label, kwargs, evals in (settings(tuple(counts)) if settings else []):
    if kwargs.get('sampler') == 'ddpm' and not c.cost.ddpm:
      continue
    sampler = functools.partial(ex.family.sample, **kwargs)
    per_s, _, extra = sampling_cost(types.SimpleNamespace(sample=sampler), ex.state,
                                    c.cost.num_samples)
    print(f'compare: {name} {label}: {per_s:.1f} samples/s', flush=True)
    out['cost_points'].append({'sampler': label, 'network_evals': evals, 'samples_per_s': per_s,
                               **measure(extra)})
    if 'tokens' in extra:
      texts[f'{name}, {label}'] = text_lines(extra['tokens'])
  if texts:
    out['text_samples'] = texts
  return out, samples, ex


def quality_measure(ex, config, reference=None):
  """samples -> their quality metrics: images in the classifier's feature space
  against the train split; 2-D points against the mixture's modes, if it has any;
  text by `ast.parse` and by the nats/byte the `reference` (AR) experiment gives it."""
  meta = ex.data.info.metadata or {}
  if ex.data.info.modality == 'text':
    def text_quality(samples):
      out = {'parses': parse_share(samples['tokens'])}
      if reference is not None and reference.family.name == 'autoregressive':
        out['ar_nll'] = score_text(reference, samples['tokens'])
      return out
    return text_quality
  if ex.data.info.modality == 'image':
    clf = classifier.load(config.data.name, config.data.data_dir)
    real = clf.features(quality.split_images(ex.data, 'train'))
    return lambda samples: image_quality(clf, real, samples['image'])
  if 'centers' in meta:
    def point_quality(samples):
      stats = modes.mode_stats(samples['x'], meta['centers'], meta['std'])
      del stats['num_modes']
      return stats
    return point_quality
  return lambda samples: {}


def text_lines(tokens, num=8):
  return [bytes(np.asarray(row, np.uint8)).decode('utf-8', 'replace') for row in tokens[:num]]


def parses(text):
  """Whether `text`, cut to whole lines, is Python that `ast.parse` accepts; a
  last line that opens a block (ends in ':') gets an indented `pass`."""
  lines = text.split('\n')[:-1] if '\n' in text else []
  while lines and not lines[-1].strip():
    lines.pop()
  if not lines:
    return False
  if lines[-1].rstrip().endswith(':'):
    indent = len(lines[-1]) - len(lines[-1].lstrip())
    lines.append(' ' * (indent + 4) + 'pass')
  try:
    ast.parse('\n'.join(lines))
    return True
  except (SyntaxError, ValueError):
    return False


def parse_share(tokens):
  texts = [bytes(np.asarray(row, np.uint8)).decode('utf-8', 'replace') for row in tokens]
  return float(np.mean([parses(t) for t in texts]))


def score_text(ex, tokens, length=64):
  """Nats/byte that `ex`'s model gives bytes 2..length of each row of `tokens`
  (the first byte is context): exact for the AR model, a bound for masked diffusion."""
  x = np.asarray(tokens)[:, :length].astype(np.int32)
  step = _score_steps.setdefault(id(ex), jax.jit(ex.family.eval_step))
  out = step(ex.state, {'tokens': x, 'mask': np.ones(len(x), bool)}, jax.random.PRNGKey(0))
  return float(out['nll']) / float(out['dims'])


_score_steps = {}


def text_scores(experiments, samples_by_family, num=256):
  """Markdown: each model's nats/byte of each family's samples and of validation text."""
  any_ex = next(iter(experiments.values()))
  real = np.concatenate([b['tokens'] for b in any_ex.data.eval_batches('validation', 1)])[:num]
  sets = {'validation text': real}
  sets.update({f'{k} samples': v['tokens'] for k, v in samples_by_family.items()})
  names = list(experiments)
  lines = ['', 'Each model scoring each set (nats/byte of bytes 2..64; exact for the AR model, a '
           'bound for masked diffusion; the validation text is the reference):', '',
           '| text | ' + ' | '.join(f'scored by {n}' for n in names) + ' |',
           '|---|' + '---:|' * len(names)]
  for label, tokens in sets.items():
    lines.append(f'| {label} | ' + ' | '.join(f'{score_text(experiments[n], tokens):.3f}'
                                             for n in names) + ' |')
  return '\n'.join(lines) + '\n'


def image_quality(clf, real_features, images):
  """FD, k-NN precision and recall against the real features, and class entropy."""
  fake = clf.features(images)
  precision, recall = quality.knn_precision_recall(real_features, fake)
  return {'fd': quality.frechet_distance(fake, real_features), 'precision': precision,
          'recall': recall, 'entropy': classifier.histogram_stats(clf.predict(images))['entropy']}


def aggregate(rows):
  """{family: {metric: (mean, std, n)}} over seeds."""
  out = {}
  for row in rows:
    fam = out.setdefault(row['family'], {})
    for key, value in row.items():
      if isinstance(value, (int, float)) and not isinstance(value, bool) and key != 'seed':
        fam.setdefault(key, []).append(float(value))
  return {f: {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in m.items()}
          for f, m in out.items()}


def markdown(summary, rows, command, missing=()):
  likelihood = {r['family']: r['likelihood'] for r in rows}
  columns = [col for col in COLUMNS if any(col[0] in m for m in summary.values())]
  lines = [f'```bash\n{command}\n```', '',
           '| family | likelihood | ' + ' | '.join(h for _, h, _, _ in columns) + ' |',
           '|---|---|' + '---:|' * len(columns)]
  for fam, metrics in summary.items():
    cells = []
    for key, _, _, fmt in columns:
      if key not in metrics or not math.isfinite(metrics[key][0]):
        cells.append('n/a')
        continue
      mean, std, n = metrics[key]
      cells.append(fmt.format(mean) + (f' ± {fmt.format(std)}' if n > 1 else ''))
    lines.append(f'| {fam} | {likelihood[fam]} | ' + ' | '.join(cells) + ' |')
  seeds = max(len({r['seed'] for r in rows if r['family'] == f}) for f in summary)
  lines += ['', f'Mean ± std over {seeds} seed(s) where more than one ran. Definitions:', '']
  lines += [f'- **{h}**: {d}.' for _, h, d, _ in columns]
  lines += [f'- **{fam}** is not in the table: {why}.' for fam, why in missing]
  return '\n'.join(lines) + '\n'


def cost_table(rows):
  """Quality against cost for the families with several samplers (seed 0)."""
  points = [(r['family'], p) for r in rows if r['seed'] == 0 for p in r.get('cost_points', [])]
  if not points:
    return ''
  keys = [k for k in ('fd', 'precision', 'recall', 'modes', 'high_quality', 'ar_nll', 'parses')
          if k in points[0][1]]
  heads = {k: (h, fmt) for k, h, _, fmt in COLUMNS}
  lines = ['', 'The same trained model under other samplers (seed 0; cost.png plots them):', '',
           '| family | sampler | net evals / sample | samples/s | '
           + ' | '.join(heads[k][0] for k in keys) + ' |', '|---|---|---:|---:|' + '---:|' * len(keys)]
  lines += [f"| {f} | {p['sampler']} | {p['network_evals']} | {p['samples_per_s']:.1f} | "
            + ' | '.join(heads[k][1].format(p[k]) for k in keys) + ' |' for f, p in points]
  return '\n'.join(lines) + '\n'


def figures(workdir, rows, samples_by_family, info):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  # Samples side by side: a row of 16 per family, named on the left.
  images = {k: s['image'][:16] for k, s in samples_by_family.items() if 'image' in s}
  if images:
    writers.labelled_rows(os.path.join(workdir, 'samples.png'), images, info.value_range, width=9)
    with open(os.path.join(workdir, 'samples.txt'), 'w') as f:
      f.write('rows of samples.png, top to bottom: ' + ', '.join(
          k for k, s in samples_by_family.items() if 'image' in s) + '\n')
  points = {k: s['x'] for k, s in samples_by_family.items() if 'x' in s}
  if points:  # 2-D data: a scatter panel per family, the mode centers marked
    fig = Figure(figsize=(3 * len(points), 3.2))
    axes = fig.subplots(1, len(points), squeeze=False)
    centers = np.asarray((info.metadata or {}).get('centers', np.zeros((0, 2))))
    for ax, (fam, x) in zip(axes[0], points.items()):
      ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
      ax.scatter(centers[:, 0], centers[:, 1], s=12, marker='x', color='red')
      ax.set_title(fam)
      ax.set_aspect('equal')
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, 'samples.png'))
  # Loss curves, one panel per family (their losses are not on one scale).
  fams = sorted({r['family'] for r in rows})
  fig = Figure(figsize=(3.2 * len(fams), 3))
  axes = fig.subplots(1, len(fams), squeeze=False)
  for ax, fam in zip(axes[0], fams):
    for r in rows:
      if r['family'] == fam:
        recs = [x for x in _records(r['workdir']) if x['split'] == 'train']
        ax.plot([x['elapsed_s'] for x in recs], [x[r['headline']] for x in recs],
                label=f'seed {r["seed"]}')
    ax.set_title(fam)
    ax.set_xlabel('seconds')
    ax.set_ylabel(next(r['headline'] for r in rows if r['family'] == fam))
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'curves.png'))
  # Quality against cost: each family's samples, and a line through a family's
  # other samplers (diffusion at several DDIM step counts and DDPM).
  fig = Figure(figsize=(6, 4.5))
  ax = fig.subplots()
  metric = next((m for m in ('fd', 'high_quality', 'ar_nll') if any(m in r for r in rows)), 'fd')
  for i, r in enumerate(x for x in rows if metric in x and x.get('samples_per_s')):
    color = f'C{i % 10}'
    ax.scatter(1.0 / r['samples_per_s'], r[metric], color=color)
    ax.annotate(f"{r['family']} ({r['network_evals']} evals)",
                (1.0 / r['samples_per_s'], r[metric]), fontsize=8)
    points = r.get('cost_points', [])
    if points:
      ax.plot([1.0 / p['samples_per_s'] for p in points], [p[metric] for p in points], 'o--',
              color=color, alpha=0.6)
      for p in points:
        ax.annotate(p['sampler'], (1.0 / p['samples_per_s'], p[metric]), fontsize=7,
                    color=color)
  ax.set_xscale('log')
  ax.set_xlabel('seconds per sample (after compilation, log scale)')
  ax.set_ylabel({'fd': 'Fréchet distance (classifier features)',
                 'high_quality': 'share of samples within 3 std of a mode',
                 'ar_nll': 'AR nats/byte of the samples'}[metric])
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'cost.png'))


def main(config, workdir, command='python launch.py'):
  os.makedirs(workdir, exist_ok=True)
  rows, samples_by_family, experiments = [], {}, {}
  only = [n for n in config.only.split(',') if n]
  for name, fam in config.families.items():
    if only and name not in only:
      continue
    for seed in range(config.seeds):
      wd = os.path.join(workdir, name, f'seed_{seed}')
      print(f'compare: {name}, seed {seed} -> {wd}', flush=True)
      row, samples, ex = run_one(name, fam, config, seed, wd, experiments)
      if 'stopped_by' in row:
        print('compare: stopped; the same command resumes (finished runs are only re-measured)',
              flush=True)
        return row
      rows.append(row)
      info = ex.data.info
      samples_by_family.setdefault(name, samples)
      experiments.setdefault(name, ex)
      print('compare: ' + json.dumps({k: v for k, v in row.items()
                                      if k not in ('workdir', 'text_samples')}), flush=True)
  summary = aggregate(rows)
  with open(os.path.join(workdir, 'report.json'), 'w') as f:
    json.dump({'config': json.loads(config.to_json()), 'summary': summary, 'runs': rows}, f,
              indent=2)
  report = markdown(summary, rows, command, config.get('missing', {}).items()) + cost_table(rows)
  if info.modality == 'text':
    report += text_scores(experiments, samples_by_family)
    with open(os.path.join(workdir, 'samples.txt'), 'w') as f:
      for row in rows:
        for label, texts in row.get('text_samples', {}).items():
          f.write(f'===== {label} (seed {row["seed"]}) =====\n')
          f.write(''.join(f'--- sample {i} ---\n{t}\n' for i, t in enumerate(texts)))
  with open(os.path.join(workdir, 'report.md'), 'w') as f:
    f.write(report)
  figures(workdir, rows, samples_by_family, info)
  print(report)
  written = [f for f in ('report.md', 'report.json', 'samples.png', 'samples.txt', 'curves.png',
                         'cost.png') if os.path.exists(os.path.join(workdir, f))]
  print(f'report in {workdir}: {", ".join(written)}')
  return summary
