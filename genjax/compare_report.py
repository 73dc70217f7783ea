"""The comparison's report: report.md (the table, the samplers of each model,
the textbook claims judged on the numbers), report.json, and the figures
samples.png, curves.png and cost.png. Every cell comes from a run; a metric a
family cannot give is 'n/a'."""
import json
import math
import os

import numpy as np

from genjax import writers

# Columns of the main table: (key, header, definition, format).
COLUMNS = (
    ('bpd', 'test bits/dim', 'negative log-likelihood of the test split in bits per dimension: '
     'exact, or an upper bound (a variational or importance-weighted bound, or a density of '
     'dequantised pixels), as the likelihood column says; none for a family without one',
     '{:.3f}'),
    ('bpd_ode', 'PF-ODE bits/dim', 'where a run also evaluates its probability-flow ODE (a '
     'diffusion model with `diffusion.ode_likelihood`): the negative log-likelihood of the '
     'dequantised test split in bits per dimension, beside the bound', '{:.3f}'),
    ('nll', 'test NLL (nats)', 'negative log-likelihood of a test point (2-D data: a density, '
     'so it can be negative); exact or a bound as the likelihood column says', '{:.3f}'),
    ('nats_per_byte', 'validation nats/byte', 'text: negative log-likelihood of the whole '
     'validation split in nats per byte; exact or a bound as the likelihood column says',
     '{:.3f}'),
    ('fd', 'FD', 'Fréchet distance between the samples and the reference images (as many, from '
     'the train split) in the feature space of a small classifier trained on the train split; '
     'lower is better', '{:.2f}'),
    ('precision', 'precision', 'share of samples inside the k-NN (k=3) manifold of the reference '
     'images (Kynkäänniemi et al. 2019)', '{:.3f}'),
    ('recall', 'recall', 'share of reference images inside the samples\' k-NN manifold',
     '{:.3f}'),
    ('entropy', 'class entropy', 'entropy (nats) of the classifier\'s class histogram of the '
     'samples; log 10 = 2.303 is uniform over the digits, 0 is one class only', '{:.3f}'),
    ('sharpness', 'sharpness', 'variance of the images\' Laplacian relative to the held-out '
     'images\' (1 = as sharp as the data; below 1 blurrier)', '{:.2f}'),
    ('modes', 'modes', 'modes of the mixture with at least one sample within 3 std of its '
     'center', '{:.1f}'),
    ('high_quality', 'high quality', 'share of samples within 3 std of some mode', '{:.3f}'),
    ('kl_uniform', 'KL to uniform', 'KL divergence from the samples\' mode histogram (samples '
     'within 3 std) to the uniform one over the modes', '{:.3f}'),
    ('scored_nll', 'exact model\'s nats/byte of samples', 'text: the exact-likelihood model\'s '
     'negative log-likelihood of the samples (bytes 2..64 given the first), nats per byte',
     '{:.3f}'),
    ('parses', 'parses', 'text: share of samples that `ast.parse` accepts after cutting them '
     'to whole lines (a trailing block opener gets an indented `pass`)', '{:.3f}'),
    ('network_evals', 'net evals / sample', 'network evaluations to draw one sample', '{:.0f}'),
    ('train_flops', 'train FLOPs', 'training compute: the train step\'s FLOPs, counted on its '
     'jaxpr (genjax.flops: matmuls and convolutions exactly, loops multiplied out), times the '
     'steps', '{:.3g}'),
    ('steps', 'steps', 'training steps, the budget divided by the step\'s FLOPs', '{:.0f}'),
    ('selected_step', 'selected step', 'the step whose validation likelihood was best (the test '
     'split and the samples are measured on its model; the last step where there is none)',
     '{:.0f}'),
    ('roughness', 'loss roughness', 'std of the step-to-step change of the logged headline '
     'loss over the second half of training, over its mean absolute value', '{:.3f}'),
    ('samples_per_s', 'samples/s', 'samples per second after compilation (a rate: it depends '
     'on the machine and its load)', '{:.1f}'),
    ('train_s', 'train (s)', 'wall time of the training loop (a time: it depends on the '
     'machine and its load)', '{:.0f}'),
)
TIMED = ('samples_per_s', 'train_s', 'sample_compile_s')
DATA_LABEL = 'data (held-out)'


def _is_number(v):
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def aggregate(rows):
  """{label: {metric: (mean, half-width, n)}}: over seeds, the std across them;
  for one seed, half the width of the run's own 95% interval (0 if it has none)."""
  out = {}
  for row in rows:
    fam = out.setdefault(row['label'], {})
    for key, value in row.items():
      if _is_number(value) and key != 'seed' and not key.endswith(('_lo', '_hi')):
        half = (row[f'{key}_hi'] - row[f'{key}_lo']) / 2 if f'{key}_lo' in row else 0.0
        fam.setdefault(key, []).append((float(value), half))
  summary = {}
  for label, metrics in out.items():
    summary[label] = {}
    for key, values in metrics.items():
      means = [v for v, _ in values]
      half = float(np.std(means)) if len(values) > 1 else values[0][1]
      summary[label][key] = (float(np.mean(means)), half, len(values))
  return summary


def judged_table(summary, rows):
  """What a family's Claim judges: means over seeds, their spread, seed 0's samplers."""
  table = {}
  for label, metrics in summary.items():
    first = next(r for r in rows if r['label'] == label)
    entry = {'family': first['family'], 'likelihood': first['likelihood'],
             'seeds': max(n for _, _, n in metrics.values()),
             'cost_points': first.get('cost_points', [])}
    for key, (mean, half, n) in metrics.items():
      entry[key] = mean
      if n > 1:
        entry[f'{key}_seed_std'] = half
    for key in ('drift_lo', 'drift_hi'):
      if key in first:
        entry[key] = first[key]
    table[label] = entry
  return table


def _cell(metrics, key, fmt):
  if key not in metrics or not math.isfinite(metrics[key][0]):
    return 'n/a'
  mean, half, n = metrics[key]
  if n > 1 or half > 0:
    return f'{fmt.format(mean)} ± {fmt.format(half)}'
  return fmt.format(mean)


def markdown(summary, rows, data_row, command, missing=()):
  likelihood = {r['label']: r.get('likelihood_note') or r['likelihood'] for r in rows}
  columns = [col for col in COLUMNS if any(col[0] in m for m in summary.values())]
  lines = [f'```bash\n{command}\n```', '',
           '| family | likelihood | ' + ' | '.join(h for _, h, _, _ in columns) + ' |',
           '|---|---|' + '---:|' * len(columns)]
  for label, metrics in summary.items():
    cells = [_cell(metrics, key, fmt) for key, _, _, fmt in columns]
    lines.append(f'| {label} | {likelihood[label]} | ' + ' | '.join(cells) + ' |')
  if data_row:
    data = aggregate([{'label': DATA_LABEL, **data_row}])[DATA_LABEL]
    lines.append(f'| {DATA_LABEL} | n/a | ' + ' | '.join(
        _cell(data, key, fmt) if key in data else 'n/a' for key, _, _, fmt in columns) + ' |')
  seeds = max(n for m in summary.values() for _, _, n in m.values())
  spread = (f'mean ± std over {seeds} seeds' if seeds > 1 else
            '± half the width of the run\'s 95% interval (a bootstrap over the samples; for the '
            'likelihood, over the test batches); counts and times carry none')
  lines += ['', f'Cells: {spread}. The `{DATA_LABEL}` row measures held-out real examples, as '
            'many as the samples, exactly as the samples are measured: the floor for FD and '
            'the ceiling for precision and recall at this sample size. Every column but the '
            'last two is the same on every run of the command on a CPU. Definitions:', '']
  lines += [f'- **{h}**: {d}.' for _, h, d, _ in columns]
  lines += [f'- **{fam}** is not in the table: {why}.' for fam, why in missing]
  return '\n'.join(lines) + '\n'


def cost_table(rows):
  """The same trained models under their other samplers (seed 0)."""
  points = [(r['label'], p) for r in rows if r['seed'] == 0 for p in r.get('cost_points', [])]
  if not points:
    return ''
  keys = [k for k in ('fd', 'precision', 'recall', 'sharpness', 'modes', 'high_quality',
                      'scored_nll', 'parses') if any(k in p for _, p in points)]
  heads = {k: (h, fmt) for k, h, _, fmt in COLUMNS}
  lines = ['', 'The same trained models under their other samplers (seed 0; cost.png plots '
           'them):', '',
           '| family | sampler | net evals / sample | ' + ' | '.join(heads[k][0] for k in keys)
           + ' | samples/s |', '|---|---|---:|' + '---:|' * len(keys) + '---:|']
  for label, p in points:
    cells = [_cell(aggregate([{'label': 'x', 'seed': 0, **p}])['x'], k, heads[k][1])
             for k in keys]
    lines.append(f"| {label} | {p['sampler']} | {p['network_evals']} | " + ' | '.join(cells)
                 + f" | {p['samples_per_s']:.1f} |")
  return '\n'.join(lines) + '\n'


def claims_table(claims, table, data_row):
  """Each family's textbook claim, the numbers it was judged on, the verdict."""
  if not claims:
    return ''
  lines = ['', 'The claims the comparison exists to test, judged on this run\'s numbers at its '
           'budget:', '', '| claim | measured | verdict at this budget |', '|---|---|---|']
  for claim in claims.values():
    evidence, verdict = claim.judge(table, data_row)
    lines.append(f'| {claim.text} | {evidence} | {verdict} |')
  return '\n'.join(lines) + '\n'


def cross_table(scores):
  """{scorer label: {set label: nats/byte}}: each text model scoring each set."""
  if not scores:
    return ''
  scorers = list(scores)
  sets = list(next(iter(scores.values())))
  lines = ['', 'Each model scoring each set (nats/byte of bytes 2..64 given the first; exact or '
           'a bound as the model\'s likelihood is):', '',
           '| text | ' + ' | '.join(f'scored by {s}' for s in scorers) + ' |',
           '|---|' + '---:|' * len(scorers)]
  for name in sets:
    lines.append(f'| {name} | ' + ' | '.join(f'{scores[s][name]:.3f}' for s in scorers) + ' |')
  return '\n'.join(lines) + '\n'


def write(workdir, config, rows, data_row, claims, samples, held, info, command, scores=None):
  """Writes report.md, report.json and the figures; returns the summary."""
  summary = aggregate(rows)
  missing = config.get('missing', {}).items()
  report = (markdown(summary, rows, data_row, command, missing) + cost_table(rows)
            + claims_table(claims, judged_table(summary, rows), data_row) + cross_table(scores))
  with open(os.path.join(workdir, 'report.json'), 'w') as f:
    json.dump({'config': json.loads(config.to_json()), 'summary': summary, 'data': data_row,
               'runs': rows, 'scores': scores}, f, indent=2)
  with open(os.path.join(workdir, 'report.md'), 'w') as f:
    f.write(report)
  texts = [(label, t) for r in rows for label, t in r.get('text_samples', {}).items()]
  if texts:
    with open(os.path.join(workdir, 'samples.txt'), 'w') as f:
      for label, lines in texts:
        f.write(f'===== {label} =====\n')
        f.write(''.join(f'--- sample {i} ---\n{t}\n' for i, t in enumerate(lines)))
  figures(workdir, rows, samples, held, info)
  print(report)
  written = [f for f in ('report.md', 'report.json', 'samples.png', 'samples.txt', 'curves.png',
                         'cost.png') if os.path.exists(os.path.join(workdir, f))]
  print(f'report in {workdir}: {", ".join(written)}')
  return summary


def _train_records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == 'train']


def figures(workdir, rows, samples, held, info):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  images = {k: s['image'][:16] for k, s in samples.items() if 'image' in s}
  if images:  # a row of 16 per family, on the data's one grey scale, held-out data last
    if held is not None:
      images[DATA_LABEL] = held[:16]
    writers.labelled_rows(os.path.join(workdir, 'samples.png'), images, info.value_range, width=9)
  points = {k: s['x'] for k, s in samples.items() if 'x' in s}
  if points:  # 2-D data: a scatter panel per family, the mode centers marked
    fig = Figure(figsize=(3 * len(points), 3.2))
    axes = fig.subplots(1, len(points), squeeze=False)
    centers = np.asarray((info.metadata or {}).get('centers', np.zeros((0, 2))))
    for ax, (label, x) in zip(axes[0], points.items()):
      ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
      ax.scatter(centers[:, 0], centers[:, 1], s=12, marker='x', color='red')
      ax.set_title(label)
      ax.set_aspect('equal')
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, 'samples.png'))
  # Loss against training compute, one panel per family (their losses have no common scale).
  labels = list(dict.fromkeys(r['label'] for r in rows))
  fig = Figure(figsize=(3.2 * len(labels), 3))
  axes = fig.subplots(1, len(labels), squeeze=False)
  for ax, label in zip(axes[0], labels):
    for r in rows:
      if r['label'] == label:
        recs = _train_records(r['workdir'])
        ax.plot([x['step'] * r['flops_per_step'] for x in recs], [x[r['headline']] for x in recs],
                label=f'seed {r["seed"]}')
    ax.set_title(label)
    ax.set_xlabel('training FLOPs')
    ax.set_ylabel(next(r['headline'] for r in rows if r['label'] == label))
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'curves.png'))
  _cost_figure(os.path.join(workdir, 'cost.png'), rows)


def _log_ticks(ax):
  """Labels on a log x axis that do not overlap: 1-2-5 per decade over a few
  decades, one per decade beyond; unlabelled minor ticks."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  lo, hi = ax.get_xlim()
  decades = np.log10(hi / lo) if 0 < lo < hi else 0.0
  subs = (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
  ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f'{v:g}'))
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _cost_figure(path, rows):
  """Sample quality against network evaluations per sample, and against seconds
  per sample: each model's default sampler, and a line through its others."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  metric = next((m for m in ('fd', 'high_quality', 'scored_nll') if any(m in r for r in rows)),
                None)
  if metric is None:
    return
  fig = Figure(figsize=(11, 4.5))
  axes = fig.subplots(1, 2)
  seed0 = [r for r in rows if r['seed'] == 0 and metric in r]
  for i, r in enumerate(seed0):
    color = f'C{i % 10}'
    points = [(r['network_evals'], 1.0 / r['samples_per_s'], r[metric])] + [
        (p['network_evals'], 1.0 / p['samples_per_s'], p[metric]) for p in r['cost_points']
        if metric in p]
    for ax, x in zip(axes, (0, 1)):
      ax.scatter(points[0][x], points[0][2], color=color, label=r['label'])
      if len(points) > 1:
        line = sorted((p[x], p[2]) for p in points)
        ax.plot(*zip(*line), 'o--', color=color, alpha=0.6)
  ylabel = {'fd': 'Fréchet distance (classifier features)',
            'high_quality': 'share of samples within 3 std of a mode',
            'scored_nll': "exact model's nats/byte of the samples"}[metric]
  for ax, xlabel in zip(axes, ('network evaluations per sample', 'seconds per sample')):
    ax.set_xscale('log')
    _log_ticks(ax)
    ax.set_xlabel(xlabel + ' (log scale)')
    ax.set_ylabel(ylabel)
  axes[0].legend(fontsize=8, loc='best')
  fig.tight_layout()
  fig.savefig(path)
