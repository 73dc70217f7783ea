"""The contract between a generative-model family and the generic trainer.

A family is a module with `build(config, info) -> Family`. `info` is the
`genjax.data.DatasetInfo` of the experiment's dataset; `config` the whole
experiment ConfigDict. The returned `Family` holds pure functions; the trainer
calls them without knowing which family it runs:

  init(rng, batch) -> state
      Host-side, on one device's share of the first training batch (so data
      dependent initialisation, e.g. a flow's ActNorm, can look at real data).
      `state` is any pytree with an integer `step` leaf; it may hold several
      networks and optimizer states (a GAN), an EMA copy of the parameters
      (diffusion), or anything else the family needs. It is what gets
      checkpointed.

  train_step(state, batch, rng) -> (state, metrics)
      Per-device and pure. Runs inside `jax.pmap` with axis name 'data'
      (`genjax.parallel.DATA_AXIS`): the family averages gradients with
      `lax.pmean(grads, DATA_AXIS)`. `rng` is already distinct per device and
      per step. `metrics` is a flat dict of scalars, identical on all devices
      (pmean them). A GAN alternates its generator and discriminator updates
      inside this one call.

  eval_step(state, batch) -> sums
      Per-device and pure. `batch['mask']` (B,) marks real examples (the last
      eval batch is padded). Returns a flat dict of sums over the real
      examples, with 'examples' (their count). The trainer adds the sums over
      devices and batches and reports each as a mean per example; when 'nll'
      (total nats) and 'dims' (total dimensions) are both present it also
      reports `nll_per_dim` and `bpd` (bits per dimension).

  sample(state, rng, num_samples) -> samples
      Host-side callable (it may jit internally) returning numpy-compatible
      samples in data space: images as (N, H, W, C) in the dataset's
      integer value range, tokens as (N, T) int32, points as (N, D).

  likelihood: 'exact' (AR model, flow), 'bound' (VAE, diffusion) or 'none'
      (GAN): says what the eval 'nll' means.
"""
import dataclasses
from typing import Any, Callable

import flax
import jax.numpy as jnp

LIKELIHOODS = ('exact', 'bound', 'none')


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  init: Callable[..., Any]
  train_step: Callable[..., Any]
  eval_step: Callable[..., Any]
  sample: Callable[..., Any]
  likelihood: str

  def __post_init__(self):
    if self.likelihood not in LIKELIHOODS:
      raise ValueError(f'likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}')


@flax.struct.dataclass
class TrainState:
  """The common case: one network, one optimizer."""
  step: jnp.ndarray
  params: Any
  opt_state: Any
