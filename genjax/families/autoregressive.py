"""Autoregressive family: a decoder-only transformer trained by next-token
cross-entropy, on byte-level text or on images read as pixel sequences.

Images become `[BOS] + pixels in raster (H, W, C) order`, with one token per
grey level (vocabulary = num_levels + 1). Predictions are a softmax over the
num_levels pixel values only (BOS is an input, never an output), so the eval
NLL is the exact, normalised log-likelihood of the image in nats per dimension.
"""
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax import optim, sampling
from genjax.errors import ConfigError
from genjax.families import base
from genjax.nn.transformer import Transformer


MODALITIES = ('text', 'image')
POSITIVE = ('sample.length',)


def token_spec(info):
  """Returns (input vocabulary, output vocabulary, sequence length incl. BOS)."""
  if info.modality == 'text':
    return info.num_levels, info.num_levels, info.shape[0]
  return info.num_levels + 1, info.num_levels, int(np.prod(info.shape)) + 1  # images


def batch_tokens(batch, info):
  """int32 (B, T+1) tokens of a batch; for images the first token is BOS."""
  if info.modality == 'text':
    return batch['tokens'].astype(jnp.int32)
  image = batch['image'].astype(jnp.int32)
  flat = image.reshape(image.shape[0], -1)
  bos = jnp.full((flat.shape[0], 1), info.num_levels, jnp.int32)
  return jnp.concatenate([bos, flat], axis=1)


def make_model(config, info):
  vocab_size, _, length = token_spec(info)
  m = config.model
  return Transformer(vocab_size=vocab_size, max_len=length - 1, num_layers=m.num_layers,
                     num_heads=m.num_heads, width=m.width, mlp_ratio=m.mlp_ratio,
                     positions=m.positions, dropout=m.dropout, dtype=base.compute_dtype(m),
                     remat=m.get('remat', False))


def token_nll(model, params, tokens_BxT1, num_outputs, rng=None, train=False):
  """Next-token NLL in nats, BxT, over the first `num_outputs` classes."""
  rngs = {'dropout': rng} if train else {}
  logits, _ = model.apply({'params': params}, tokens_BxT1[:, :-1], train=train, rngs=rngs)
  return optax.softmax_cross_entropy_with_integer_labels(logits[..., :num_outputs],
                                                         tokens_BxT1[:, 1:])


@flax.struct.dataclass
class DecodeState:
  cache: list        # per layer {'k','v'}: BxLxHxD
  logits: jnp.ndarray  # BxV, for the next position
  index: jnp.ndarray   # int32 scalar: the next position to write


def decode(model, params, prompt_BxP, num_steps, rng, temperature=1.0, top_k=0, top_p=1.0,
           num_outputs=None):
  """Prefills the prompt once, then samples `num_steps` tokens from the KV cache.

  Only the first `num_outputs` tokens of the vocabulary are sampled (all if None).

  The last sampled token is not needed as an input (its forward pass, at an
  index clamped to the cache, is discarded), so P + num_steps may reach
  model.max_len + 1, the training window. Returns BxN int32 tokens.
  """
  B, P = prompt_BxP.shape
  if P + num_steps > model.max_len + 1:
    raise ValueError(f'prompt ({P}) + steps ({num_steps}) exceeds the context length '
                     f'{model.max_len} + 1')
  cache = model.init_cache(B)
  logits, cache = model.apply({'params': params}, prompt_BxP, cache=cache, index=0)
  logits = logits[..., :num_outputs]
  state = DecodeState(cache=cache, logits=logits[:, -1], index=jnp.asarray(P, jnp.int32))

  def step(state, rng_t):
    token_B = sampling.sample_tokens(rng_t, state.logits, temperature, top_k, top_p)
    logits, cache = model.apply({'params': params}, token_B[:, None], cache=state.cache,
                                index=state.index)
    return DecodeState(cache=cache, logits=logits[:, -1, :num_outputs], index=state.index + 1), token_B

  _, tokens_NxB = jax.lax.scan(step, state, jax.random.split(rng, num_steps))
  return tokens_NxB.T


def decode_recompute(model, params, prompt_BxP, num_steps, rng, temperature=1.0, top_k=0,
                     top_p=1.0, num_outputs=None):
  """`decode` without the KV cache: every step runs the whole window again.

  The tokens live in a buffer of model.max_len positions; causal attention makes
  the padding after the current position irrelevant. The same keys draw the
  same tokens as `decode`; this is the baseline the cache is measured against.
  """
  B, P = prompt_BxP.shape
  if P + num_steps > model.max_len + 1:
    raise ValueError(f'prompt ({P}) + steps ({num_steps}) exceeds the context length '
                     f'{model.max_len} + 1')
  buffer = jnp.zeros((B, model.max_len), jnp.int32).at[:, :P].set(prompt_BxP)

  def step(carry, rng_t):
    buffer, index = carry
    logits, _ = model.apply({'params': params}, buffer)
    last = jax.lax.dynamic_index_in_dim(logits, index - 1, axis=1, keepdims=False)
    token_B = sampling.sample_tokens(rng_t, last[:, :num_outputs], temperature, top_k, top_p)
    buffer = jax.lax.dynamic_update_slice_in_dim(
        buffer, token_B[:, None], jnp.minimum(index, model.max_len - 1), axis=1)
    return (buffer, index + 1), token_B

  _, tokens_NxB = jax.lax.scan(step, (buffer, jnp.asarray(P, jnp.int32)),
                               jax.random.split(rng, num_steps))
  return tokens_NxB.T


def raster_prefix(known_mask):
  """k, when `known_mask` (N, H, W, C) marks the first k pixels in raster order of
  every image; a ValueError otherwise: the model conditions only on a prefix."""
  flat = np.asarray(known_mask, bool).reshape(np.shape(known_mask)[0], -1)
  k = int(flat[0].sum()) if len(flat) else 0
  if not np.array_equal(flat, np.broadcast_to(np.arange(flat.shape[1]) < k, flat.shape)):
    raise ValueError('the autoregressive model completes images from their first pixels in '
                     'raster order: known_mask must be True on the same first k pixels (row by '
                     'row) of every image and False after them')
  return k


def build(config, info):
  model = make_model(config, info)
  _, num_outputs, _ = token_spec(info)
  tx, schedule = optim.make_optimizer(config.optim, config.train.num_steps)

  def init(rng, batch):
    tokens = batch_tokens(batch, info)
    params = jax.jit(model.init)(rng, tokens[:1, :-1])['params']
    return base.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  def train_step(state, batch, rng):
    loss_fn = lambda p, b: token_nll(model, p, b['tokens'], num_outputs, base.device_key(rng),
                                     train=True).mean()
    params, opt_state, metrics, _ = base.update(
        loss_fn, state.params, state.opt_state, tx, batch={'tokens': batch_tokens(batch, info)},
        microbatches=base.microbatches(config))
    metrics['lr'] = schedule(state.step)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def eval_step(state, batch, rng):
    del rng  # the likelihood is exact: nothing is drawn
    tokens = batch_tokens(batch, info)
    mask = batch['mask'].astype(jnp.float32)
    nll_BxT = token_nll(model, state.params, tokens, num_outputs)
    return dict(nll=(nll_BxT.sum(-1) * mask).sum(),
                dims=mask.sum() * nll_BxT.shape[1],
                examples=mask.sum())

  sample_cfg = config.sample
  _decode = jax.jit(functools.partial(decode, model, num_outputs=num_outputs), static_argnums=(2,))

  def sample(state, rng, num_samples):
    opts = dict(temperature=sample_cfg.temperature, top_k=sample_cfg.top_k, top_p=sample_cfg.top_p)
    decode_fn = lambda params, prompt, steps, rng: _decode(params, prompt, steps, rng, **opts)
    if info.modality == 'image':
      prompt = jnp.full((num_samples, 1), info.num_levels, jnp.int32)
      pixels = decode_fn(state.params, prompt, model.max_len, rng)
      return {'image': np.asarray(pixels).reshape((num_samples,) + tuple(info.shape))}
    prompt = np.frombuffer(sample_cfg.prompt.encode('utf-8'), np.uint8).astype(np.int32)
    if not 0 < len(prompt) < model.max_len:
      raise ConfigError(f'sample.prompt must be 1..{model.max_len - 1} bytes, got {len(prompt)}')
    return {'tokens': generate_text(decode_fn, state.params, prompt, num_samples,
                                    sample_cfg.length, model.max_len, rng)}

  @jax.jit
  def _token_nll(params, tokens):
    return token_nll(model, params, tokens, num_outputs)

  def complete(state, rng, images, known_mask):
    """Images whose first pixels in raster order are given (`known_mask` True on
    them, the same prefix for every image; else a ValueError): the rest is sampled
    by prompting with them (sample.temperature, top_k, top_p); the given pixels
    are returned unchanged."""
    known = raster_prefix(known_mask)
    tokens = np.asarray(batch_tokens({'image': images}, info))
    new = decode_fn_for(state)(jnp.asarray(tokens[:, :1 + known]), model.max_len - known, rng)
    out = np.concatenate([tokens[:, 1:1 + known], np.asarray(new)], axis=1)
    return out.reshape(np.shape(images)).astype(np.asarray(images).dtype)

  def decode_fn_for(state):
    opts = dict(temperature=sample_cfg.temperature, top_k=sample_cfg.top_k, top_p=sample_cfg.top_p)
    return lambda prompt, steps, rng: _decode(state.params, prompt, steps, rng, **opts)

  def conditional_nll(state, images, known_mask):
    """(N,) exact NLL in nats of the pixels where `known_mask` is False given the
    others, which must be a raster-order prefix (as for `complete`)."""
    known = raster_prefix(known_mask)
    nll = _token_nll(state.params, batch_tokens({'image': jnp.asarray(images)}, info))
    return np.asarray(nll[:, known:].sum(-1))

  def position_nll(state, batch):
    """(N, T) exact NLL in nats of each position given the ones before it."""
    tokens = batch_tokens({k: jnp.asarray(v) for k, v in batch.items()}, info)
    return np.asarray(_token_nll(state.params, tokens))

  tools = {
      # One (cached) forward pass per generated token, after the prompt's prefill.
      'network_evals': model.max_len if info.modality == 'image' else 1 + sample_cfg.length,
      'position_nll': position_nll, 'claim': CLAIM}
  if info.modality == 'image':
    tools.update(complete=complete, conditional_nll=conditional_nll)
  return base.Family(name='autoregressive', init=init, train_step=train_step,
                     eval_step=eval_step, sample=sample, likelihood='exact',
                     state_fields=('model', 'data.seq_len'), tools=tools)


def _judge_sequential(table, data):
  """Network evaluations per sample against the dimension, and the drift of
  the model's NLL of its own samples against held-out data along positions
  (`drift`: the comparison's last-quarter minus first-quarter mean gap)."""
  del data
  rows = [r for r in table.values() if r['family'] == 'autoregressive']
  if not rows:
    return 'no autoregressive model in the comparison', 'not measured'
  row = rows[0]
  evidence = f"{row['network_evals']:.0f} sequential network evaluations per sample"
  if 'drift' not in row:
    return evidence, 'partly supported'
  evidence += (f"; its NLL of its own samples minus that of held-out data changes by "
               f"{row['drift']:+.3f} nats per position from the first quarter of positions to the "
               f"last (95% interval {row['drift_lo']:+.3f} to {row['drift_hi']:+.3f})")
  return evidence, 'supported' if row['drift_lo'] > 0 else 'partly supported'


CLAIM = base.Claim('AR generation is sequential and its errors accumulate', _judge_sequential)


def generate_text(decode_fn, params, prompt_P, num_samples, length, max_len, rng):
  """Samples `length` tokens past the prompt, longer than the context if asked.

  When the context fills up, its last half is prefilled again and decoding goes
  on, so only two shapes are ever compiled. Returns (N, P + length) tokens.
  """
  tokens = np.tile(prompt_P[None], (num_samples, 1))
  keep = max_len // 2
  chunk = 0
  while tokens.shape[1] < len(prompt_P) + length:
    context = tokens if chunk == 0 else tokens[:, -keep:]
    new = decode_fn(params, jnp.asarray(context), max_len + 1 - context.shape[1],
                    jax.random.fold_in(rng, chunk))
    tokens = np.concatenate([tokens, np.asarray(new)], axis=1)
    chunk += 1
  return tokens[:, :len(prompt_P) + length]
