"""Tables from a workdir's metrics.jsonl: `python -m genjax.report WORKDIR [--metric=nll_per_dim]`.

Prints a Markdown table of the eval records (step, seconds since training
started, the chosen metrics), the last record of each step winning, so a
resumed run reads as one curve.
"""
import argparse
import json
import os


def eval_curve(workdir, metrics=('nll_per_dim', 'bpd')):
  rows = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      if record.get('split') == 'eval':
        rows[record['step']] = record
  return [(step, rows[step].get('elapsed_s'), [rows[step].get(m) for m in metrics])
          for step in sorted(rows)]


def markdown(workdir, metrics):
  lines = ['| step | time (s) | ' + ' | '.join(metrics) + ' |',
           '|---:|---:|' + '---:|' * len(metrics)]
  for step, elapsed, values in eval_curve(workdir, metrics):
    cells = ['' if v is None else f'{v:.4f}' for v in values]
    lines.append(f'| {step} | {elapsed:.0f} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('workdir')
  p.add_argument('--metric', action='append', help='eval metric(s) to show (repeatable)')
  args = p.parse_args()
  print(markdown(args.workdir, args.metric or ['nll_per_dim', 'bpd']))


if __name__ == '__main__':
  main()
