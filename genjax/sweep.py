"""Ablation sweeps: one experiment under a grid of config overrides.

  python launch.py --config=experiments/vae.py:digits --workdir=/tmp/sweep \\
      --sweep='model.latent_dim=8,16;seed=0,1'

Settings are the cartesian product of the `;`-separated fields' values (here
4 runs), run one after another, each in `workdir/<field=value,...>`; `seed`
is a field like any other. A run's workdir resumes like any other, so an
interrupted sweep picks up where it stopped. Writes `sweep.md` (one row per
setting without the seed: final metrics, mean +/- std over seeds) and
`sweep.json` (every run).
"""
import copy
import itertools
import json
import os

import numpy as np

from genjax.errors import ConfigError


def parse(spec, source='--sweep'):
  """'a.b=1,2;c=x' -> [{'a.b': 1, 'c': 'x'}, {'a.b': 2, 'c': 'x'}] (values typed by literal)."""
  fields = []
  for part in filter(None, (p.strip() for p in spec.split(';'))):
    if '=' not in part:
      raise ConfigError(f"{source}: {part!r} is not FIELD=VALUE[,VALUE...]; e.g. "
                        "'optim.lr=1e-3,3e-4;seed=0,1'")
    key, values = part.split('=', 1)
    fields.append([(key.strip(), _literal(v.strip())) for v in values.split(',')])
  return [dict(combo) for combo in itertools.product(*fields)]


def _literal(text):
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return {'true': True, 'false': False}.get(text.lower(), text)


def apply(config, overrides, source='--sweep'):
  config = copy.deepcopy(config)
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    try:
      for p in parents:
        node = node[p]
      old = node[leaf]
    except (KeyError, AttributeError) as e:
      raise ConfigError(f'{source}: the config has no field {key!r}') from e
    node[leaf] = type(old)(value) if isinstance(old, (int, float)) and not isinstance(
        old, bool) else value
  return config


def _scalars(final):
  """{evaluator/metric: value} of the numeric final metrics."""
  return {f'{e}/{k}': v for e, m in final.items() if isinstance(m, dict)
          for k, v in m.items() if isinstance(v, (int, float)) and k != 'elapsed_s'}


def main(config, workdir, spec, run_fn):
  """Runs `run_fn(config, workdir) -> final metrics` for every setting; writes the table."""
  settings = parse(spec)
  runs = []
  for overrides in settings:
    name = ','.join(f'{k}={v}' for k, v in overrides.items())
    print(f'sweep: {name}', flush=True)
    final = run_fn(apply(config, overrides), os.path.join(workdir, name))
    runs.append({'overrides': overrides, 'metrics': _scalars(final)})
  groups = {}
  for r in runs:
    key = tuple((k, v) for k, v in r['overrides'].items() if k != 'seed')
    groups.setdefault(key, []).append(r['metrics'])
  metrics = sorted({m for r in runs for m in r['metrics']})
  lines = ['| setting | runs | ' + ' | '.join(metrics) + ' |', '|---|---:|' + '---:|' * len(metrics)]
  for key, group in groups.items():
    cells = []
    for m in metrics:
      values = [g[m] for g in group if m in g]
      cells.append('' if not values else f'{np.mean(values):.4g}' +
                   (f' ± {np.std(values):.2g}' if len(values) > 1 else ''))
    setting = ', '.join(f'{k}={v}' for k, v in key) or '(base)'
    lines.append(f'| {setting} | {len(group)} | ' + ' | '.join(cells) + ' |')
  table = '\n'.join(lines) + '\n'
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'sweep.md'), 'w') as f:
    f.write(table)
  with open(os.path.join(workdir, 'sweep.json'), 'w') as f:
    json.dump(runs, f, indent=2)
  print(table)
  print(f'sweep table in {workdir}/sweep.md', flush=True)
  return runs
