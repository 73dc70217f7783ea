"""Completion across families on digits: the top half of a test digit is
given, each family fills in the bottom half.

  python -m genjax.completion --workdir=/tmp/compare
      Uses the digits models of the comparison in that workdir
      (`<workdir>/<family>/seed_0`, as the digits comparison trains them) and
      trains the ones missing there the same way first; then
      completes the same test digits with each family and writes completion.png
      (a row per family), completion.md and completion.json.

The families are those of the registry that model images, have an entry in the
comparison, and offer `tools['complete'](state, rng, images, known_mask)`: the
images with the pixels where the boolean known_mask is False filled in, the
others unchanged. How each family fills them is its tool's docstring. Here the
known pixels are the top 4 of 8 rows (32 pixels).

The metric beside the figure: how often the comparison's digits classifier
(genjax.evals.classifier) gives the completed image its true label, and the
negative log-likelihood of the true bottom half given the top where the family
offers it (`tools['conditional_nll'](state, images, known_mask)`; 'n/a' for the
others, whose conditionals are not tractable).
"""
import argparse
import json
import os

import jax
import numpy as np

from genjax import compare, families, parallel, run, train, writers
from genjax.evals import classifier
from genjax.experiments import compare as compare_config


def completers(c):
  """{name: experiment config} of the registered image families in the
  comparison `c` whose tools offer 'complete', in registry order."""
  out = {}
  for name in families.modelling('image'):
    if name not in c.families:
      continue
    config = compare.family_config(name, c.families[name], c, 0)
    if 'complete' in run.dataset_and_family(config)[1].tools:
      out[name] = config
  return out


def trained(name, config, c, workdir):
  """(experiment, state): the comparison's model of `name` in workdir/<name>/seed_0,
  trained there if missing."""
  config, _ = compare.budgeted(config, c)
  config.evals = type(config.evals)()  # the comparison evaluated it; here it is only used
  config.train.select = ''
  wd = os.path.join(workdir, name, 'seed_0')
  ex = run.experiment(config, wd)
  if ex.step == 0:
    print(f'completion: training {name} into {wd} (the comparison\'s budget)', flush=True)
    return ex, train.train_and_evaluate(ex).state
  state = ex.start_state
  if ex.checkpointer.best() is not None:  # the comparison measured its selected model: so does this
    state = ex.checkpointer.restore_best(state)
  return ex, parallel.unreplicate(state)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdir', required=True)
  p.add_argument('--num', type=int, default=200, help='test digits completed per family')
  p.add_argument('--show', type=int, default=12, help='of them, in the figure')
  p.add_argument('--smoke', action='store_true', help='the comparison\'s smoke models, 16 digits')
  args = p.parse_args(argv)
  c = compare_config.get_config('digits' + (',smoke' if args.smoke else ''))
  if args.smoke:
    args.num, args.show = 16, 8
  rng = jax.random.PRNGKey(0)
  exs = {name: trained(name, config, c, args.workdir) for name, config in completers(c).items()}
  data = next(iter(exs.values()))[0].data
  images, labels = _test_digits(data, args.num)
  H = images.shape[1]
  mask = np.zeros(images.shape, bool)
  mask[:, :H // 2] = True
  clf = classifier.load(c.dataset, c.data.data_dir, **c.quality.classifier.to_dict())

  def accuracy(x):
    return float(np.mean(clf.predict(x).argmax(-1) == labels))

  rows = [{'method': 'the test digits', 'accuracy': accuracy(images)},
          {'method': 'top half only (bottom blank)', 'accuracy': accuracy(np.where(mask, images, 0))}]
  completed = {}
  for name, (ex, state) in exs.items():
    x = ex.family.tools['complete'](state, jax.random.fold_in(rng, len(completed)), images, mask)
    assert np.array_equal(x[mask], images[mask]), f'{name} changed the given pixels'
    completed[name] = x
    row = {'method': name, 'accuracy': accuracy(x),
           'bottom_mse': float(np.mean((x - images)[~mask] ** 2))}
    if 'conditional_nll' in ex.family.tools:
      nll = ex.family.tools['conditional_nll'](state, images, mask)
      row['bottom_nll'] = float(np.mean(nll))
      row['bottom_bpd'] = float(np.mean(nll) / (~mask[0]).sum() / np.log(2))
    rows.append(row)
    print(f'completion: {name}: accuracy {row["accuracy"]:.3f}', flush=True)

  os.makedirs(args.workdir, exist_ok=True)
  _figure(os.path.join(args.workdir, 'completion.png'), images[:args.show], mask[:args.show],
          {k: v[:args.show] for k, v in completed.items()}, data.info)
  command = ' '.join(['python', '-m', __spec__.name if __spec__ else 'genjax.completion',
                      f'--workdir={args.workdir}'] + (['--smoke'] if args.smoke else []))
  table = _markdown(rows, args.num, command)
  with open(os.path.join(args.workdir, 'completion.md'), 'w') as f:
    f.write(table)
  with open(os.path.join(args.workdir, 'completion.json'), 'w') as f:
    json.dump({'rows': rows, 'num': args.num}, f, indent=2)
  print(table)
  print(f'completion in {args.workdir}: completion.png, completion.md, completion.json')
  return rows


def _test_digits(data, num):
  """The first `num` test digits (images as float32, labels), over as many
  eval batches as that takes."""
  images, labels = [], []
  for batch in data.eval_batches('test'):
    keep = np.asarray(batch['mask'], bool)
    images.append(np.asarray(batch['image'], np.float32)[keep])
    labels.append(np.asarray(batch['label'])[keep])
    if sum(map(len, images)) >= num:
      break
  images, labels = np.concatenate(images)[:num], np.concatenate(labels)[:num]
  if len(images) < num:
    raise ValueError(f'--num={num}: the test split holds {len(images)} digits')
  return images, labels


def _markdown(rows, num, command):
  fmt = lambda r, k, f: f.format(r[k]) if k in r else 'n/a'
  lines = [f'```bash\n{command}\n```', '',
           '| completion by | classifier gives the true label | bottom-half NLL (nats) | '
           'bottom-half bits/dim | bottom-half MSE (levels²) |', '|---|---:|---:|---:|---:|']
  lines += [f"| {r['method']} | {r['accuracy']:.3f} | {fmt(r, 'bottom_nll', '{:.2f}')} | "
            f"{fmt(r, 'bottom_bpd', '{:.3f}')} | {fmt(r, 'bottom_mse', '{:.2f}')} |" for r in rows]
  lines += ['', f'{num} test digits; the top half (32 pixels) is given. The NLL is of the true '
            'bottom half given the top, where the family gives it (n/a where that conditional '
            'is not tractable). MSE: mean squared error of the filled pixels against the truth, '
            'in grey levels (0..16) squared.']
  return '\n'.join(lines) + '\n'


def _figure(path, images, mask, completed, info):
  rows = {'test digit': images, 'given (top half)': np.where(mask, images, 0)}
  rows.update(completed)
  writers.labelled_rows(path, rows, info.value_range)


if __name__ == '__main__':
  main()
