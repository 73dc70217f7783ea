"""Tables from a workdir's metrics.jsonl: `python -m genjax.report WORKDIR [--metric=bpd] [--split=test]`.

Prints a Markdown table of the records of the chosen evaluators (default: the
`validation` and `test` likelihood evaluations): step, seconds of training,
evaluator, the chosen metrics. The last record of each (step, evaluator) wins,
and the time of a resumed run continues from where the run before it stopped,
so a resumed run reads as one curve. `--list` prints the metrics each
evaluator logged. Errors (no metrics.jsonl, a metric or evaluator the workdir
does not have) are one sentence, exit status 2.
"""
import argparse
import json
import os
import sys

DEFAULT_METRICS = ('nll_per_dim', 'bpd')
DEFAULT_SPLITS = ('validation', 'test')
_NOT_METRICS = ('step', 'split', 'time', 'elapsed_s')


class ReportError(ValueError):
  """A request the workdir cannot answer; the message names what it has."""


def records(workdir):
  """The records of workdir/metrics.jsonl in file order, each with 'elapsed_s'
  counted across resumes: a run that resumed adds the time its predecessors
  reached to its own clock, which started again at 0."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.isfile(path):
    raise ReportError(f'no metrics.jsonl in {workdir}{_runs_below(workdir)}')
  out, offset, reached, start, last = [], 0.0, 0.0, None, None
  with open(path) as f:
    for line in f:
      if not line.strip():
        continue
      record = json.loads(line)
      elapsed = record.get('elapsed_s')
      if elapsed is not None:
        # A new process: its clock started at another time, or went back.
        t0 = record['time'] - elapsed if 'time' in record else None
        if last is not None and (elapsed < last or (
            t0 is not None and start is not None and abs(t0 - start) > 1.0)):
          offset += reached
          reached = 0.0
        start, last = t0, elapsed
        reached = max(reached, elapsed)
        record = {**record, 'elapsed_s': offset + elapsed}
      out.append(record)
  return out


def metrics_by_split(workdir):
  """{evaluator: [metric names]}, in the order they first appear."""
  found = {}
  for r in records(workdir):
    names = found.setdefault(r.get('split'), [])
    names += [k for k, v in r.items()
              if k not in _NOT_METRICS and not isinstance(v, str) and k not in names]
  return found


def eval_curve(workdir, split='validation', metrics=DEFAULT_METRICS):
  """[(step, elapsed_s, [metric values])] of one evaluator, by step."""
  rows = {}
  for record in records(workdir):
    if record.get('split') == split:
      rows[record['step']] = record
  return [(step, rows[step].get('elapsed_s'), [rows[step].get(m) for m in metrics])
          for step in sorted(rows)]


def markdown(workdir, metrics, splits=DEFAULT_SPLITS):
  lines = ['| step | time (s) | split | ' + ' | '.join(metrics) + ' |',
           '|---:|---:|---|' + '---:|' * len(metrics)]
  rows = sorted((step, splits.index(split), split, elapsed, values)
                for split in splits for step, elapsed, values in eval_curve(workdir, split, metrics))
  for step, _, split, elapsed, values in rows:
    cells = ['' if v is None else f'{v:.4f}' for v in values]
    time = '' if elapsed is None else f'{elapsed:.0f}'
    lines.append(f'| {step} | {time} | {split} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def choose(workdir, metrics=None, splits=None):
  """(metrics, splits) checked against what the workdir logged; the defaults
  keep the default metrics that are there."""
  have = metrics_by_split(workdir)
  path = os.path.join(workdir, 'metrics.jsonl')
  if splits:
    missing = [s for s in splits if s not in have]
    if missing:
      raise ReportError(f'no evaluator {missing[0]!r} in {path}; it has {_names(have)}')
  else:
    splits = tuple(s for s in DEFAULT_SPLITS if s in have)
    if not splits:
      raise ReportError(f'{path} holds no validation or test records; choose an evaluator with '
                        f'--split (it has {_names(have)}; --list shows their metrics)')
  present = [m for s in splits for m in have[s]]
  if metrics:
    missing = [m for m in metrics if m not in present]
    if missing:
      raise ReportError(f'no metric {missing[0]!r} in the {", ".join(splits)} records of {path}; '
                        f'they have {_names(dict.fromkeys(present))}')
  else:
    metrics = [m for m in DEFAULT_METRICS if m in present]
    if not metrics:
      raise ReportError(f'the {", ".join(splits)} records of {path} have none of '
                        f'{", ".join(DEFAULT_METRICS)}; choose with --metric from '
                        f'{_names(dict.fromkeys(present))}')
  return list(metrics), tuple(splits)


def listing(workdir):
  return '\n'.join(f'{split}: {", ".join(names)}'
                   for split, names in metrics_by_split(workdir).items())


def _names(keys):
  return ', '.join(str(k) for k in keys) or 'nothing'


def _runs_below(workdir):
  """For a comparison's or a sweep's root: the workdirs below it that have records."""
  if not os.path.isdir(workdir):
    return f' ({workdir} does not exist)'
  runs = []
  for root, dirs, files in os.walk(workdir):
    dirs.sort()
    if 'metrics.jsonl' in files:
      runs.append(os.path.relpath(root, workdir))
  if not runs:
    return '; give the workdir of a training run'
  more = f' and {len(runs) - 3} more' if len(runs) > 3 else ''
  return ('; the runs below it have one: ' + ', '.join(os.path.join(workdir, r) for r in runs[:3])
          + more)


def main(argv=None):
  p = argparse.ArgumentParser(prog=f"python -m {__spec__.name if __spec__ else 'genjax.report'}", description=__doc__.splitlines()[0])
  p.add_argument('workdir')
  p.add_argument('--metric', action='append', help='metric(s) to show (repeatable)')
  p.add_argument('--split', action='append', help='evaluator(s) to show (repeatable)')
  p.add_argument('--list', action='store_true', help="print each evaluator's metrics")
  args = p.parse_args(argv)
  try:
    if args.list:
      print(listing(args.workdir))
      return
    metrics, splits = choose(args.workdir, args.metric, args.split)
    print(markdown(args.workdir, metrics, splits))
  except ReportError as e:
    print(f'genjax.report: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
