"""Floating-point operations of a traced function, counted on its jaxpr.

The comparison gives every family the same training compute, so it needs the
cost of one train step. XLA's cost analysis of the compiled step counts the
body of a loop once whatever its trip count (a GAN's critic steps run in a
`lax.scan`), and its count depends on the backend's fusion decisions; counting
the jaxpr gives the same number on every backend, with loops multiplied out.

What is counted: 2 FLOPs per multiply-add of matmuls (`dot_general`) and
convolutions (a transposed convolution's inserted zeros excluded), one per output element of element-wise arithmetic and
transcendentals, one per input element of reductions. Data movement
(reshapes, slices, gathers, casts) and random-bit generation count nothing.
"""
import jax
import numpy as np
from jax.extend import core as jex_core

from genjax.families import base

# Primitives that move or reinterpret data, or draw random bits: no arithmetic.
_FREE = frozenset((
    'reshape', 'broadcast_in_dim', 'transpose', 'squeeze', 'expand_dims', 'slice',
    'dynamic_slice', 'dynamic_update_slice', 'concatenate', 'pad', 'convert_element_type',
    'gather', 'iota', 'select_n', 'copy', 'copy_p', 'rev', 'stop_gradient', 'device_put',
    'random_bits', 'random_seed', 'random_wrap', 'random_unwrap', 'random_fold_in',
    'random_split', 'threefry2x32', 'shift_right_logical', 'shift_left', 'or', 'and', 'xor',
    'not', 'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'bitcast_convert_type', 'sharding_constraint',
    'axis_index', 'psum', 'pmean', 'pmin', 'pmax', 'all_gather', 'split', 'clamp',
    'optimization_barrier', 'pvary'))
_REDUCTIONS = ('argmax', 'argmin', 'cumsum', 'cumprod', 'cummax', 'cummin', 'cumlogsumexp',
               'sort', 'top_k')


def _size(aval):
  return int(np.prod(aval.shape)) if hasattr(aval, 'shape') else 1


def _sub_jaxprs(eqn):
  for value in eqn.params.values():
    for v in value if isinstance(value, (list, tuple)) else (value,):
      if isinstance(v, jex_core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jex_core.Jaxpr):
        yield v


def count(jaxpr):
  """FLOPs of one evaluation of `jaxpr` (a Jaxpr or ClosedJaxpr)."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval
      total += 2 * _size(eqn.outvars[0].aval) * int(np.prod([lhs.shape[i] for i in contract]))
    elif name == 'conv_general_dilated':
      kernel, spec = eqn.invars[1].aval, eqn.params['dimension_numbers'].rhs_spec
      per_output = kernel.shape[spec[1]] * int(np.prod([kernel.shape[i] for i in spec[2:]]))
      # A transposed (input-dilated) convolution multiplies by the zeros it inserts
      # only in a naive kernel: of each output's taps, 1 / dilation per axis are real.
      per_output /= float(np.prod(eqn.params.get('lhs_dilation') or (1,)))
      total += int(2 * _size(eqn.outvars[0].aval) * per_output)
    elif name == 'scan':
      total += eqn.params['length'] * count(eqn.params['jaxpr'])
    elif name == 'while':  # the trip count is not known when tracing: counted once
      total += count(eqn.params['body_jaxpr']) + count(eqn.params['cond_jaxpr'])
    elif name == 'cond':
      total += max(count(branch) for branch in eqn.params['branches'])
    elif any(True for _ in _sub_jaxprs(eqn)):  # pjit, custom_jvp/vjp, remat, ...
      total += sum(count(sub) for sub in _sub_jaxprs(eqn))
    elif name in _FREE:
      continue
    elif name.startswith('reduce') or name in _REDUCTIONS:
      total += sum(_size(v.aval) for v in eqn.invars)
    else:
      total += sum(_size(v.aval) for v in eqn.outvars)
  return total


def of(fn, *args, axis_env=()):
  """FLOPs of `fn(*args)`; args may be arrays or jax.ShapeDtypeStruct."""
  return count(jax.make_jaxpr(fn, axis_env=list(axis_env))(*args))


def train_step(family, batch, rng=None):
  """FLOPs of one train step of `family` on the whole global `batch`, traced as
  if one device held it: the same number whatever the device count. The state
  is only traced (jax.eval_shape), never initialised."""
  rng = jax.random.PRNGKey(0) if rng is None else rng
  try:
    state = jax.eval_shape(lambda: family.init(rng, batch))
  except jax.errors.JAXTypeError:  # an init that computes on concrete values
    state = family.init(rng, batch)
  return of(family.train_step, state, batch, rng, axis_env=[(base.DATA_AXIS, 1)])
