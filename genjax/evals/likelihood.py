"""Likelihood of a split: the family's eval sums, as means per example and
bits/dim, labelled exact, bound or none (`Family.likelihood`).

cfg: split; max_batches (periodic evaluations use an evenly spaced subset of
that many batches, -1 = all; the final evaluation uses the whole split, except
for the evaluator that selects the model, train.select, which compares every
checkpoint on the same examples).
"""


class Evaluator:

  def __init__(self, name, cfg, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx

  def run(self, step, rstate, host_state, final):
    del step, host_state
    max_batches = -1 if final else self.cfg.get('max_batches', -1)
    return self.ctx.evaluate(rstate, self.cfg.split, max_batches)
