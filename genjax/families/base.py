"""The contract between a generative-model family and the generic trainer.

A family is a module with `build(config, info) -> Family`. `info` is the
`genjax.data.DatasetInfo` of the experiment's dataset; `config` the whole
experiment ConfigDict. The returned `Family` holds pure functions; the trainer
and the evaluators (`genjax.evals`) call them without knowing which family it is:

  init(rng, batch) -> state
      Host-side, on one device's share of the first training batch (so data
      dependent initialisation, e.g. a flow's ActNorm, can look at real data).
      `state` is any pytree with an integer `step` leaf; it may hold several
      networks and optimizer states (a GAN), an EMA copy of the parameters
      (diffusion), or anything else the family needs. It is what gets
      checkpointed.

  train_step(state, batch, rng) -> (state, metrics)
      Per-device and pure. Runs inside `jax.shard_map` over the mesh's axis
      `DATA_AXIS` (genjax.parallel), on this device's share of the batch.
      `update` below does the gradient, the cross-device mean, the optimizer
      and the norms; a family calls it once per network it trains. `rng` is
      the step's key, the same on every device: draw per-example noise with
      `example_keys(rng, B)` (each example's key depends on its index in the
      global batch, so a step on 4 devices equals the step on 1), and take
      `device_key(rng)` for what is drawn per device (Flax dropout).
      `metrics` is a flat dict of scalars, identical on all devices. A GAN
      runs its discriminator and generator updates inside this one call.
      Gradient accumulation (config.train.microbatches, `microbatches`): the
      family hands `update` its loss as a function of (params, batch) and the
      batch, with whatever per-example draws it made outside the loss.

  eval_step(state, batch, rng) -> sums
      Per-device and pure. `batch['mask']` (B,) marks real examples (the last
      eval batch is padded). `rng` is a pure function of the seed and the
      batch index, the same on every device (use `example_keys` as in
      training), so an evaluation that draws noise (an IWAE bound, a
      diffusion bound, dequantisation) is still deterministic. Returns a flat
      dict of sums over the real examples, with 'examples' (their count). The
      evaluator adds the sums over devices and batches and reports each as a
      mean per example; with 'nll' (total nats) and 'dims' (total dimensions)
      it also reports `nll_per_dim` and `bpd`, labelled with `likelihood`.

  sample(state, rng, num_samples) -> samples
      Host-side callable (it may jit internally). Samples look like a batch of
      the dataset: {'image': (N, H, W, C) in `info.value_range`} (integers or
      floats; a conditional model adds 'label' (N,)), {'tokens': (N, T)} or
      {'x': (N, D)}.

  likelihood: 'exact' (AR model, flow on points), 'bound' (VAE, diffusion,
      flow on discrete pixels) or 'none' (GAN): what the eval 'nll' means;
      every eval record carries it. `likelihood_note` says more where the kind
      alone misleads (a flow's exact density that bounds discrete data).
  headline: the train metric shown in the progress bar.
  finite: the train metrics that must stay finite; the trainer stops the run,
      before any checkpoint, when one does not.
  state_fields: the config fields (dotted paths) that fix the state's shapes
      or meaning; a checkpoint written under other values is refused.
  tools: named host-side callables beyond `sample` that evaluators and
      notebooks may use (a flow's `log_prob`, a VAE's `reconstruct`, ...),
      and `network_evals`: the network evaluations `sample` spends per sample
      (the comparison reports it), or None where only a draw tells, and then
      `draw(state, rng, num)`: (samples, network evaluations per sample);
      `sampler_settings(step_counts)`: the other
      ways `sample` can draw, as (label, keyword arguments, network evaluations);
      `claim`: the textbook claim about the family (`Claim`) that the
      comparison's report judges on its numbers; for images,
      `complete(state, rng, images, known_mask)`: the images (N, H, W, C) with
      the pixels where the boolean known_mask (same shape) is False filled in by
      the family's own method and the others unchanged (`genjax.completion`).
"""
import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from genjax.errors import ConfigError

LIKELIHOODS = ('exact', 'bound', 'none')
# The mesh axis that genjax.parallel splits batches over; steps reduce over it.
DATA_AXIS = 'data'


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  init: Callable[..., Any]
  train_step: Callable[..., Any]
  eval_step: Callable[..., Any]
  sample: Callable[..., Any]
  likelihood: str
  headline: str = 'loss'
  finite: tuple = ('loss',)
  state_fields: tuple = ('model',)
  advice: str = 'lower optim.lr or raise optim.warmup_steps'  # when a metric diverges
  tools: dict = dataclasses.field(default_factory=dict)
  likelihood_note: str = ''

  def __post_init__(self):
    if self.likelihood not in LIKELIHOODS:
      raise ValueError(f'likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}')
    if self.headline not in self.finite:
      raise ValueError(f'the headline metric {self.headline!r} must be among finite={self.finite}')


@dataclasses.dataclass(frozen=True)
class Claim:
  """A claim the textbooks make about a family, and how to judge it.

  `judge(table, data)` reads the comparison's summary, {row label: {metric:
  mean over seeds, 'family', 'likelihood', 'network_evals', 'cost_points',
  '<metric>_seed_std', ...}}, and the held-out data's row (or None), and
  returns (evidence, verdict): a sentence of the numbers it used, which must
  not depend on timing, and one of VERDICTS.
  """
  text: str
  judge: Callable[..., Any]


VERDICTS = ('supported', 'partly supported', 'not supported', 'not measured')


@flax.struct.dataclass
class TrainState:
  """The common case: one network, one optimizer."""
  step: jnp.ndarray
  params: Any
  opt_state: Any


def device_index():
  """This device's index on DATA_AXIS; 0 outside a mapped step (a test, a notebook)."""
  try:
    return jax.lax.axis_index(DATA_AXIS)
  except NameError:  # no device axis bound
    return 0


# (index, count) of the microbatch whose loss `update` is tracing, or None.
_microbatch = [None]


def device_key(rng):
  """A key distinct per device (for randomness drawn per device, like dropout),
  and per microbatch inside `update(..., microbatches=K)` with K > 1."""
  key = jax.random.fold_in(rng, device_index())
  if _microbatch[0] is not None:
    key = jax.random.fold_in(key, _microbatch[0][0])
  return key


def example_keys(rng, batch_size):
  """(B,) keys, one per example of this device's batch, folded with the
  example's index in the global batch: the draws do not depend on how the
  batch is split over devices, nor into microbatches (inside a loss that
  `update` splits, `batch_size` is the microbatch's)."""
  index, count = _microbatch[0] or (0, 1)
  first = (device_index() * count + index) * batch_size
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(first + jnp.arange(batch_size))


def pmean(tree):
  """Mean over devices: for metrics, and for non-parameter state such as
  BatchNorm statistics, so that every device holds the same copy."""
  return jax.lax.pmean(tree, DATA_AXIS)


def update(loss_fn, params, opt_state, tx, *, batch=None, microbatches=1, has_aux=False,
           prefix=''):
  """One optimizer step on the gradient averaged over devices.

  `loss_fn(params)` returns the loss, or `(loss, aux)` with `has_aux`; aux is
  averaged over devices too, so new BatchNorm statistics returned there come
  back identical on every device. Returns `(params, opt_state, metrics, aux)`
  with metrics `{prefix}loss`, `{prefix}grad_norm`, `{prefix}param_norm` and
  `{prefix}update_norm`.

  With `batch` (a pytree of arrays that share their first axis) the loss is
  `loss_fn(params, batch)`, and `microbatches=K` splits the batch into K
  consecutive parts, runs them one after another in a `lax.scan` and averages
  their gradients, losses and aux before the one update (gradient
  accumulation: the memory of one part, the update of the whole batch). That
  equals the whole batch's update when the loss is a mean over its examples
  and each example's randomness comes from `example_keys` or travels in the
  batch; `device_key` gives each part its own key (dropout).
  """
  if batch is None:
    out, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(params)
  elif microbatches == 1:
    out, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(params, batch)
  else:
    out, grads = _accumulate(loss_fn, params, batch, microbatches, has_aux)
  loss, aux = out if has_aux else (out, None)
  grads, loss, aux = pmean((grads, loss, aux))
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  metrics = {f'{prefix}loss': loss, f'{prefix}grad_norm': optax.global_norm(grads),
             f'{prefix}param_norm': optax.global_norm(params),
             f'{prefix}update_norm': optax.global_norm(updates)}
  return params, opt_state, metrics, aux


def microbatches(config):
  """config.train.microbatches, 1 where a config has none."""
  return int(config.train.get('microbatches', 1))


def compute_dtype(model_config):
  """The networks' computation dtype, model.dtype (float32 where a config has
  none); parameters stay float32 whatever it is."""
  return jnp.dtype(model_config.get('dtype', 'float32'))


def _accumulate(loss_fn, params, batch, k, has_aux):
  """((loss[, aux]), grads) of `loss_fn`, averaged over k parts of `batch`."""
  sizes = sorted({x.shape[0] for x in jax.tree_util.tree_leaves(batch)})
  if len(sizes) != 1:
    raise ValueError(f'the leaves of a microbatched batch differ in length: {sizes}')
  if k < 1 or sizes[0] % k:
    raise ConfigError(f'train.microbatches={k} must divide the per-device batch of '
                      f'{sizes[0]} examples')
  parts = jax.tree_util.tree_map(lambda x: x.reshape((k, x.shape[0] // k) + x.shape[1:]), batch)

  def one(total, xs):
    index, part = xs
    _microbatch[0] = (index, k)
    try:
      out = jax.value_and_grad(loss_fn, has_aux=has_aux)(params, part)
    finally:
      _microbatch[0] = None
    return jax.tree_util.tree_map(jnp.add, total, out), None

  zeros = jax.tree_util.tree_map(
      lambda s: jnp.zeros(s.shape, s.dtype),
      jax.eval_shape(lambda p, b: jax.value_and_grad(loss_fn, has_aux=has_aux)(p, b), params,
                     jax.tree_util.tree_map(lambda x: x[0], parts)))
  total, _ = jax.lax.scan(one, zeros, (jnp.arange(k), parts))
  return jax.tree_util.tree_map(lambda x: x / k, total)


def skip_nonfinite(train_step, finite=('loss',)):
  """`train_step` that, when its update is not finite, keeps the state it was
  given (all but `step`, which advances, so data and keys stay in line).

  Not finite: a metric in `finite`, a norm that `update` logs, or any float
  leaf of the new state (optimizer moments, an EMA, BatchNorm statistics).
  All devices decide together. metrics['skipped_updates'] is 1 on a skipped
  step, else 0. The trainer wraps a family's step with it when
  config.train.skip_nonfinite_updates is set.
  """
  def step(state, batch, rng):
    new, metrics = train_step(state, batch, rng)
    checked = [v for k, v in metrics.items() if k in finite or k.endswith('norm')]
    checked += [x for x in jax.tree_util.tree_leaves(new) if jnp.issubdtype(x.dtype, jnp.inexact)]
    ok = jnp.all(jnp.stack([jnp.isfinite(x).all() for x in checked]))
    ok = jax.lax.pmin(ok.astype(jnp.int32), DATA_AXIS) > 0
    kept = jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, state)
    return kept.replace(step=new.step), {**metrics, 'skipped_updates': 1 - ok.astype(jnp.int32)}

  return step


def ema(average, params, decay, step=None):
  """Exponential moving average of parameters (sampling and evaluation copies).
  With `step` (the update's index), the decay warms up as min(decay, (1 + step) /
  (10 + step)), so that early averages are not dominated by the initialisation
  (a 0.999 average is still 45% init after 600 steps without it)."""
  if step is not None:
    decay = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree_util.tree_map(lambda a, p: decay * a + (1.0 - decay) * p, average, params)
