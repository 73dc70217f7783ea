"""Tables from a workdir's metrics.jsonl: `python -m genjax.report WORKDIR [--metric=bpd] [--split=test]`.

Prints a Markdown table of the records of the chosen evaluators (default: the
`validation` and `test` likelihood evaluations): step, seconds since training
started, evaluator, the chosen metrics. The last record of each (step,
evaluator) wins, so a resumed run reads as one curve.
"""
import argparse
import json
import os


def eval_curve(workdir, split='validation', metrics=('nll_per_dim', 'bpd')):
  """[(step, elapsed_s, [metric values])] of one evaluator, by step."""
  rows = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      if record.get('split') == split:
        rows[record['step']] = record
  return [(step, rows[step].get('elapsed_s'), [rows[step].get(m) for m in metrics])
          for step in sorted(rows)]


def markdown(workdir, metrics, splits=('validation', 'test')):
  lines = ['| step | time (s) | split | ' + ' | '.join(metrics) + ' |',
           '|---:|---:|---|' + '---:|' * len(metrics)]
  rows = sorted((step, splits.index(split), split, elapsed, values)
                for split in splits for step, elapsed, values in eval_curve(workdir, split, metrics))
  for step, _, split, elapsed, values in rows:
    cells = ['' if v is None else f'{v:.4f}' for v in values]
    lines.append(f'| {step} | {elapsed:.0f} | {split} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('workdir')
  p.add_argument('--metric', action='append', help='metric(s) to show (repeatable)')
  p.add_argument('--split', action='append', help='evaluator(s) to show (repeatable)')
  args = p.parse_args()
  print(markdown(args.workdir, args.metric or ['nll_per_dim', 'bpd'],
                 tuple(args.split or ('validation', 'test'))))


if __name__ == '__main__':
  main()
