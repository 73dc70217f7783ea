"""Measures of byte-text samples: whether they parse as Python, and how likely
a trained text model finds them.

  parses(text)                   the sample, cut to whole lines, is Python
  nll_per_byte(family, state, tokens)
                                 (N,) nats per byte that a text family gives each
                                 row (bytes 2.. given the first), through its own
                                 eval_step: exact or a bound, as the family's
                                 likelihood says
"""
import ast

import jax
import numpy as np

_EVAL_STEPS = {}


def decode(tokens_NxT):
  return [bytes(np.asarray(row, np.uint8)).decode('utf-8', 'replace') for row in tokens_NxT]


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


def parse_flags(tokens_NxT):
  """(N,) bools: which samples parse."""
  return np.array([parses(t) for t in decode(tokens_NxT)])


def nll_per_byte(family, state, tokens_NxT, length=64, rng=None):
  """(N,) nats per byte of bytes 2..length of each row given the first, from
  the family's eval_step run one row at a time under one compiled step."""
  x = np.asarray(tokens_NxT)[:, :length].astype(np.int32)
  if id(family) not in _EVAL_STEPS:  # the family is kept alive beside its compiled step
    _EVAL_STEPS[id(family)] = family, jax.jit(jax.vmap(
        lambda s, row, key: family.eval_step(s, {'tokens': row[None], 'mask': np.ones(1, bool)},
                                             key), in_axes=(None, 0, 0)))
  step = _EVAL_STEPS[id(family)][1]
  rng = jax.random.PRNGKey(0) if rng is None else rng
  # A key per row: a bound estimated from noise (a masking time) draws it afresh for each row.
  out = step(state, x, jax.random.split(rng, len(x)))
  return np.asarray(out['nll'], np.float64) / np.asarray(out['dims'], np.float64)
