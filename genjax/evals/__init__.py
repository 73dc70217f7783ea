"""Evaluators: the one place where a run is measured, each at its own cadence.

Each entry of `config.evals` is one evaluator (after big_vision's
`config.evals`):

  c.evals.validation = dict(kind='likelihood', split='validation', every=200)
  c.evals.test = dict(kind='likelihood', split='test', every=0)   # at the end only
  c.evals.samples = dict(kind='samples', every=0, num_samples=64)
  c.evals.modes = dict(kind='modes', every=1000, num_samples=2500)

`kind` names a module of this package (or a full dotted module path, for an
evaluator defined elsewhere) whose `Evaluator(name, cfg, ctx)` has
`run(step, rstate, host_state, final) -> metrics` (a dict, or an `Output`
that also carries samples it drew); `final` asks for the whole split at the
end of training (never for the evaluator that train.select reads, so that it
measures every checkpoint alike). `ctx` is a `Context`: what an evaluator
may use of the run, no more. `every` > 0 runs it every that many steps and at
the end of training; 0 at the end only. The trainer writes each evaluator's
metrics to metrics.jsonl with `split` = its name.
"""
import dataclasses
import importlib
from typing import Any, Callable, Optional


@dataclasses.dataclass(frozen=True)
class Context:
  """An evaluator's view of the run.

  family: the family's pure functions and tools (genjax.families.base.Family).
  data: the dataset (genjax.data.Dataset); data_config its config block.
  workdir: where the run writes.
  key(name, step): the evaluator's key at a step, the same on every run.
  evaluate(rstate, split, max_batches): the likelihood of a split (the
      compiled eval step, summed over batches and devices).
  sample(state, step, num): draws `num` samples and writes them under
      workdir/samples; returns (samples, path).
  """
  family: Any
  data: Any
  data_config: Any
  workdir: str
  key: Callable[..., Any]
  evaluate: Callable[..., Any]
  sample: Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Output:
  """What an evaluator returns beside its metrics: samples it drew and where
  it wrote them (the run returns the last of these)."""
  metrics: dict
  samples: Any = None
  path: Optional[str] = None


def build(config, ctx):
  evaluators = []
  for name, cfg in config.evals.items():
    module = cfg.kind if '.' in cfg.kind else f'genjax.evals.{cfg.kind}'
    evaluators.append(importlib.import_module(module).Evaluator(name, cfg, ctx))
  return evaluators


def due(cfg, step, final):
  return final or (cfg.every > 0 and step % cfg.every == 0)
