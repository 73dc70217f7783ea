"""Evaluators: the one place where a run is measured, each at its own cadence.

Each entry of `config.evals` is one evaluator (after big_vision's
`config.evals`):

  c.evals.validation = dict(kind='likelihood', split='validation', every=200)
  c.evals.test = dict(kind='likelihood', split='test', every=0)   # at the end only
  c.evals.samples = dict(kind='samples', every=0, num_samples=64)
  c.evals.modes = dict(kind='modes', every=1000, num_samples=2500)

`kind` names a module of this package (or a full dotted module path, for an
evaluator defined elsewhere) whose `Evaluator(name, cfg, ex)` has
`run(step, rstate, host_state, final) -> metrics`. `every` > 0 runs it every
that many steps and at the end of training; 0 at the end only. The trainer
writes each evaluator's metrics to metrics.jsonl with `split` = its name.
`ex` is the `genjax.train.Experiment`: its dataset, family, keys and workdir.
"""
import importlib


def build(config, ex):
  evaluators = []
  for name, cfg in config.evals.items():
    module = cfg.kind if '.' in cfg.kind else f'genjax.evals.{cfg.kind}'
    evaluators.append(importlib.import_module(module).Evaluator(name, cfg, ex))
  return evaluators


def due(cfg, step, final):
  return final or (cfg.every > 0 and step % cfg.every == 0)
