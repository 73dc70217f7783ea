"""Normalizing-flow family: exact log-likelihood by change of variables.

Images: a multi-scale RealNVP/Glow flow (`model.ImageFlow`) on uniformly
dequantised pixels y = (x + u) / L, u ~ U[0, 1)^D, L = num_levels. Then
-log P(x) <= -log p_y(y) + D log L for every u (Jensen), so the eval 'nll' is,
for discrete data, the dequantised bound (likelihood 'bound'): the flow's
density is exact, but what it gives the discrete pixels is an upper bound on
their NLL, the log of the bin width included. Points (toy2d): a vector RealNVP
(`model.VectorFlow`), no dequantisation, so the 'nll' is the exact continuous
NLL (likelihood 'exact').

The density and the NLL are `density.log_density` and `density.nll`.
Sampling pushes z ~ N(0, T^2 I) through the inverse (T = sample.temperature).
Tools: log_prob, score (anomaly), encode/decode (x -> z -> x), figures, and for
images complete (missing pixels by gradient ascent on the log-density).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax import optim
from genjax.families import base
from genjax.families.flow import density
from genjax.families.flow import figures as flow_figures
from genjax.families.flow.model import ImageFlow, VectorFlow


MODALITIES = ('image', 'points')
POSITIVE = ('model.levels', 'model.steps')


def data_problems(config, info, num_devices=1):
  """Image sides the multi-scale flow cannot squeeze model.levels times."""
  del num_devices
  levels = config.model.get('levels')
  if info.modality != 'image' or not isinstance(levels, int) or levels <= 0:
    return []
  H, W = info.shape[:2]
  if H % 2 ** levels or W % 2 ** levels:
    return [f'model.levels={levels} squeezes the image {levels} times, so its sides must be '
            f'multiples of {2 ** levels}; {info.name!r} images are {H}x{W}']
  return []


def make_model(m, info):
  dtype = base.compute_dtype(m)
  if info.modality == 'image':
    return ImageFlow(shape=tuple(info.shape), levels=m.levels, steps=m.steps,
                     checkerboard_steps=m.checkerboard_steps, hidden=m.hidden,
                     num_blocks=m.num_blocks, alpha=m.alpha, dtype=dtype)
  return VectorFlow(steps=m.steps, hidden=m.hidden, depth=m.depth, dtype=dtype)  # points


def complete_by_ascent(forward, rng, images, known_mask, num_levels, steps=200, lr=0.05):
  """Images with the pixels where `known_mask` is False filled by gradient ascent
  on the flow's log-density over those pixels only: their dequantised values
  start from noise (kept in (0, L) by a sigmoid), the known ones sit at the
  middle of their bins; `steps` Adam steps at `lr`, then each filled value is
  rounded down to its grey level. `forward(y) -> (z, log_det)` is the flow on
  model-space inputs y = v / L."""
  known = jnp.asarray(images, jnp.float32) + 0.5
  m = jnp.asarray(known_mask)

  def neg_log_density(free):
    v = jnp.where(m, known, num_levels * jax.nn.sigmoid(free))
    z, log_det = forward(v / num_levels)
    z = z.reshape(z.shape[0], -1)
    return -jnp.sum(-0.5 * z ** 2, axis=-1).sum() - jnp.sum(log_det)

  tx = optax.adam(lr)
  free = jax.random.normal(rng, images.shape)
  opt = tx.init(free)

  @jax.jit
  def step(free, opt):
    grads = jax.grad(neg_log_density)(free)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(free, updates), opt

  for _ in range(steps):
    free, opt = step(free, opt)
  v = np.asarray(num_levels * jax.nn.sigmoid(free))
  return np.where(known_mask, images, np.clip(np.floor(v), 0, num_levels - 1))


def build(config, info):
  model = make_model(config.model, info)
  tx, schedule = optim.make_optimizer(config.optim, config.train.num_steps)
  is_image = info.modality == 'image'
  D = int(np.prod(info.shape))
  L = info.num_levels
  levels = L if is_image else 0  # images are dequantised; points go in as they are
  log_density = functools.partial(density.log_density, model, num_levels=levels)
  nll = functools.partial(density.nll, model, num_levels=levels)

  def forward(params, y):
    return model.apply({'params': params}, y, method=model.forward)

  def init(rng, batch):
    k_noise, k_params = jax.random.split(rng)
    v = density.dequantise(batch, k_noise, levels)
    y = v / L if is_image else v
    # ActNorm layers initialise from this batch (data-dependent init).
    params = jax.jit(functools.partial(model.init, method=model.forward))(k_params, y)['params']
    return base.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  def train_step(state, batch, rng):
    loss_fn = lambda p, b: nll(p, b, rng).mean() / D  # nats per dimension
    data_key = 'image' if is_image else 'x'
    params, opt_state, metrics, _ = base.update(
        loss_fn, state.params, state.opt_state, tx, batch={data_key: batch[data_key]},
        microbatches=base.microbatches(config))
    metrics['bpd'] = metrics['loss'] / np.log(2)
    metrics['lr'] = schedule(state.step)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def eval_step(state, batch, rng):
    mask = batch['mask'].astype(jnp.float32)
    return dict(nll=(nll(state.params, batch, rng) * mask).sum(), dims=mask.sum() * D,
                examples=mask.sum())

  @jax.jit
  def _decode(params, z):
    y = model.apply({'params': params}, z, method=model.inverse)
    return y * L if is_image else y

  @jax.jit
  def _encode(params, v):
    return forward(params, v / L if is_image else v)[0]

  _log_density = jax.jit(log_density)
  _score = jax.jit(nll)

  def encode(state, x):
    """Data-space values (images as floats in [0, L)) -> z (N, D)."""
    return np.asarray(_encode(state.params, jnp.asarray(x, jnp.float32)))

  def decode(state, z):
    """z (N, D) -> data-space values, the inverse of `encode`."""
    return np.asarray(_decode(state.params, jnp.asarray(z, jnp.float32)))

  def draw(state, rng, num_samples, temperature):
    z = temperature * jax.random.normal(rng, (num_samples, D))
    v = decode(state, z)
    if is_image:  # the bin each dequantised value falls in
      return {'image': np.clip(np.floor(v), 0, L - 1).astype(np.uint8)}
    return {'x': v}

  def sample(state, rng, num_samples):
    return draw(state, rng, num_samples, config.sample.temperature)

  tools = {
      'log_prob': lambda state, x: np.asarray(_log_density(state.params, jnp.asarray(x, jnp.float32))),
      'score': lambda state, rng, batch: np.asarray(_score(state.params, batch, rng)),
      'encode': encode,
      'decode': decode,
      # (z, log|det dz/dy|) of model-space inputs y (images: v / num_levels).
      'forward': lambda state, y: forward(state.params, jnp.asarray(y, jnp.float32)),
  }
  if is_image:
    def complete(state, rng, images, known_mask):
      """The pixels where `known_mask` is False, filled by `complete_by_ascent`."""
      return complete_by_ascent(functools.partial(forward, state.params), rng, images,
                                known_mask, L)
    tools['complete'] = complete
  tools['network_evals'] = 1  # a sample is one inverse pass of the flow
  tools['figures'] = functools.partial(flow_figures.make, tools=tools, draw=draw, info=info,
                                       temperatures=tuple(config.sample.figure_temperatures))
  tools['claim'] = CLAIM
  return base.Family(name='flow', init=init, train_step=train_step, eval_step=eval_step,
                     sample=sample, likelihood='bound' if is_image else 'exact',
                     likelihood_note=DEQUANTISED if is_image else '',
                     state_fields=('model',), tools=tools)


DEQUANTISED = 'dequantised bound'


def _judge_exact(table, data):
  """The flow's likelihood kind, and its gap to an exact-likelihood family."""
  del data
  flows = [r for r in table.values() if r['family'] == 'flow']
  if not flows:
    return 'no flow in the comparison', 'not measured'
  flow = flows[0]
  key = 'bpd' if 'bpd' in flow else 'nll'
  if key not in flow:
    return 'no likelihood measured', 'not measured'
  exact = [(k, r) for k, r in table.items() if r['likelihood'] == 'exact' and key in r]
  unit = 'bits/dim' if key == 'bpd' else 'nats'
  if flow['likelihood'] == 'exact':
    return f'exact test NLL {flow[key]:.3f} {unit} (continuous data)', 'supported'
  evidence = (f'its density is exact, but on discrete pixels the dequantised {flow[key]:.3f} '
              f'{unit} only bounds the likelihood')
  if exact:
    name, row = exact[0]
    evidence += f'; {flow[key] - row[key]:+.3f} {unit} against {name}\'s exact {row[key]:.3f}'
  return evidence, 'partly supported'


CLAIM = base.Claim('flows give exact likelihoods', _judge_exact)
