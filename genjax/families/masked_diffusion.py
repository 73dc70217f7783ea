"""Masked (absorbing-state) discrete diffusion of bytes, in the style of MDLM
(Sahoo et al. 2024) and SEDD's absorbing process.

Forward process: every byte of a window is replaced by MASK independently
with probability t (alpha_t = 1 - t, the linear schedule), t in [0, 1].
Denoiser: a bidirectional transformer (`genjax.nn.transformer` with
causal=False) that reads the partly masked window and predicts the clean
byte at every position; no time input (the share of masks carries it, as
MDLM finds).

Objective: the continuous-time ELBO,
  -log p(x) <= E_{t~U(0,1)} [ (1/t) sum_{i masked in z_t} -log p_theta(x_i | z_t) ],
with the clean bytes carried over at unmasked positions. Training samples t
stratified over the batch in [eps, 1] (MDLM's recipe, eps = 1e-3), and
minimises either that estimate (model.loss='elbo') or the mean NLL over the
masked positions times T (model.loss='masked_mean'), which has nearly the same
expectation and no 1/t weights (see `masked_mean_loss`). Evaluation
estimates the whole integral without bias and with finite variance by drawing
t = u^2 (density 1/(2 sqrt t)) and weighting by 2/u: the reported nats/byte
is a bound (labelled 'bound').

Sampler: a compiled `lax.scan` over a number of steps set at sampling time.
The positions after the prompt are unmasked in a uniformly random order,
round(M (1 - i/S)) of the M generated positions still masked after step i, each
unmasked byte drawn from the denoiser's distribution at that step and never
changed again; the prompt is never masked. With S = M it unmasks exactly one
byte per step.

Blocks (model.block_size = K < T; BD3-LM, Arriola et al. 2025): the window is
cut into T/K blocks, and each block is diffused given the clean blocks before
it, so -log p(x) = sum over blocks of -log p(x_b | x_<b), each bounded by the
ELBO above with its own t. K = 1 is an autoregressive model and K = T the
plain model. Training and evaluation run every block at once on the noised
window followed by the clean one (2T tokens): a noised block sees itself and
the clean blocks before it, a clean block the clean blocks up to itself. The
sampler fills the blocks left to right, S steps each, the model reading the
window under a block-causal mask (S * number of blocks network evaluations).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from genjax import optim, sampling
from genjax.errors import ConfigError
from genjax.families import base
from genjax.nn.transformer import Transformer


MODALITIES = ('text',)
POSITIVE = ('sample.steps',)
NON_NEGATIVE = ('model.block_size',)


def config_problems(config):
  out = []
  loss, block, seq_len = config.model.get('loss'), config.model.get('block_size'), \
      config.data.get('seq_len')
  if loss not in (None, 'elbo', 'masked_mean'):
    out.append(f"model.loss={loss!r}: must be 'elbo' or 'masked_mean'")
  if isinstance(block, int) and block > 0 and isinstance(seq_len, int) and seq_len > 0 \
      and seq_len % block:
    out.append(f'model.block_size={block}: must divide data.seq_len={seq_len} (0 = one block)')
  return out

TRAIN_EPS = 1e-3


def make_model(config, info):
  m = config.model
  return Transformer(vocab_size=info.num_levels + 1, max_len=info.shape[0] - 1,
                     num_layers=m.num_layers, num_heads=m.num_heads, width=m.width,
                     mlp_ratio=m.mlp_ratio, positions=m.positions, dropout=m.dropout,
                     dtype=base.compute_dtype(m), causal=False)


def window(batch):
  """The T bytes a window models: the data's windows are T + 1 bytes overlapping
  by one (the AR model's context byte), so dropping the first byte models every
  byte once, as the AR model predicts it."""
  return batch['tokens'][:, 1:].astype(jnp.int32)


def mask_tokens(keys_B, x_BxT, t_B, mask_id):
  """z_t ~ q(z_t | x): each token is MASK with probability t, drawn with the
  example's own key. Returns (z, masked)."""
  u = jax.vmap(lambda k: jax.random.uniform(k, x_BxT.shape[1:]))(keys_B)
  masked = u < t_B[:, None]
  return jnp.where(masked, mask_id, x_BxT), masked


def mask_subsets(keys_B, x_BxT, K, mask_id):
  """Per block of K: k ~ U{1..K}, then a uniformly random k of its bytes masked.
  Returns (z, masked, weight BxT = K / k of the byte's block). With a denoiser
  that does not read t, sum over masked of weight * -log p(x_i | z) is an
  unbiased estimate of the continuous-time NELBO above (integrating t out:
  given k masked bytes, the integral of t^(k-1) (1-t)^(K-k) is 1 / (k C(K, k)),
  so NELBO = sum_k E[mean NLL of k masked bytes] = E_k[(K/k) sum over them]),
  the any-order autoregressive form; it wastes no block and its weights are
  at most K."""
  B, T = x_BxT.shape

  def one(key):
    k_size, k_order = jax.random.split(key)
    k = jax.random.randint(k_size, (T // K, 1), 1, K + 1)
    order = jnp.argsort(jnp.argsort(jax.random.uniform(k_order, (T // K, K)), axis=-1), axis=-1)
    return (order < k).reshape(T), jnp.broadcast_to(K / k, (T // K, K)).reshape(T)

  masked, weight = jax.vmap(one)(keys_B)
  return jnp.where(masked, mask_id, x_BxT), masked, weight


def block_ids(T, K):
  return jnp.arange(T) // K


def two_stream_mask(T, K):
  """(2T, 2T) attention mask over [noised window, clean window]: a noised token
  sees its own noised block and the clean blocks before it; a clean token sees
  the clean blocks up to its own."""
  b = block_ids(T, K)
  same, before = b[:, None] == b[None, :], b[None, :] < b[:, None]
  top = jnp.concatenate([same, before], axis=1)
  bottom = jnp.concatenate([jnp.zeros_like(same), before | same], axis=1)
  return jnp.concatenate([top, bottom], axis=0)


def block_causal_mask(T, K):
  """(T, T): a token sees its own block and the blocks before it."""
  b = block_ids(T, K)
  return b[None, :] <= b[:, None]


def masked_nll(logits_fn, x_BxT, t_B, keys_B, mask_id, num_outputs):
  """(-log p(x_i | z_t) for every position (BxT), masked (BxT)) at z_t ~ q(z_t | x)."""
  z, masked = mask_tokens(keys_B, x_BxT, t_B, mask_id)
  return token_nll(logits_fn, z, x_BxT, num_outputs), masked


def token_nll(logits_fn, z_BxT, x_BxT, num_outputs):
  """-log p(x_i | z) at every position (BxT)."""
  logp = jax.nn.log_softmax(logits_fn(z_BxT)[..., :num_outputs].astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, x_BxT[..., None], axis=-1)[..., 0]


def nelbo(logits_fn, x_BxT, t_B, weight_B, keys_B, mask_id, num_outputs):
  """Per-example estimate of the continuous-time NELBO in nats (B,):
  weight * sum over masked positions of -log p(x_i | z_t). `logits_fn(z)`
  returns BxTxV logits (the first num_outputs entries are the bytes)."""
  nll_BxT, masked = masked_nll(logits_fn, x_BxT, t_B, keys_B, mask_id, num_outputs)
  return weight_B * jnp.sum(jnp.where(masked, nll_BxT, 0.0), axis=-1)


def masked_mean_loss(logits_fn, x_BxT, t_B, keys_B, mask_id, num_outputs):
  """(B,) the mean NLL over an example's masked positions, times T. Given t, the
  ELBO's integrand (1/t) E[sum over masked] is T times the expected NLL of a
  masked position, so this has (nearly) the ELBO's expectation over uniform t,
  without the 1/t weights that make the ELBO estimate heavy-tailed near t = 0.
  (Exactly T/(T+1) of it: t uniform makes the number of masks uniform on
  0..T, and an example with none counts 0; see `mask_subsets`.)"""
  nll_BxT, masked = masked_nll(logits_fn, x_BxT, t_B, keys_B, mask_id, num_outputs)
  count = jnp.sum(masked, axis=-1)
  return x_BxT.shape[1] * jnp.sum(jnp.where(masked, nll_BxT, 0.0), -1) / jnp.maximum(count, 1)


def block_nelbo(logits_fn, x_BxT, keys_B, K, mask_id, num_outputs):
  """(B,) the NELBO estimate of `mask_subsets`, blocks of K."""
  z, masked, weight = mask_subsets(keys_B, x_BxT, K, mask_id)
  nll = token_nll(logits_fn, z, x_BxT, num_outputs)
  return jnp.sum(jnp.where(masked, weight * nll, 0.0), axis=-1)


def train_times(rng, index_B, total):
  """Stratified t in [eps, 1]: one shared offset, example i in stratum i / total."""
  u = (jax.random.uniform(rng) + index_B / total) % 1.0
  return TRAIN_EPS + (1.0 - TRAIN_EPS) * u


def eval_times(u_B):
  """t = u^2 with its importance weight 1 / (t q(t)) = 2 / u: an unbiased,
  finite-variance estimate of the integral over all of (0, 1]."""
  u = jnp.maximum(u_B, 1e-12)
  return u * u, 2.0 / u


def unmask_order(rng, B, L, prompt_len, K=None):
  """(B, L) rank of each position in its block's unmasking order (one block of
  L by default): the prompt first (so it is never masked), the rest at random."""
  K = K or L
  scores = jax.random.uniform(rng, (B, L))
  scores = jnp.where(jnp.arange(L) < prompt_len, -1.0, scores).reshape(B, L // K, K)
  return jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1).reshape(B, L)


def generate(logits_fn, prompt_BxL, prompt_len, num_steps, rng, mask_id, num_outputs,
             temperature=1.0, top_k=0, top_p=1.0, block_size=None):
  """Fills positions prompt_len..L-1 of `prompt_BxL` (a `lax.scan`) in
  `num_steps` steps per block of `block_size` (one block of L by default),
  block after block; blocks wholly in the prompt are skipped. Returns (tokens
  BxL, masked counts after each step, steps x B)."""
  B, L = prompt_BxL.shape
  K = block_size or L
  first = prompt_len // K  # the first block with a position to fill
  # Positions each block generates (after its share of the prompt).
  todo = jnp.asarray(K - np.clip(prompt_len - K * np.arange(L // K), 0, K), jnp.int32)
  k_order, k_run = jax.random.split(rng)
  rank = unmask_order(k_order, B, L, prompt_len, K)
  block = block_ids(L, K)
  z = jnp.where(jnp.arange(L) < prompt_len, prompt_BxL, mask_id)

  def step(z, xs):
    b, i, key = xs
    still_masked = jnp.round(todo[b] * (1.0 - (i + 1) / num_steps)).astype(jnp.int32)
    reveal = (z == mask_id) & (block == b) & (rank < K - still_masked)
    drawn = sampling.sample_tokens(key, logits_fn(z)[..., :num_outputs], temperature, top_k, top_p)
    z = jnp.where(reveal, drawn, z)
    return z, jnp.sum(z == mask_id, axis=-1)

  n = (L // K - first) * num_steps
  g = jnp.arange(n)
  xs = (first + g // num_steps, g % num_steps, jax.random.split(k_run, n))
  return jax.lax.scan(step, z, xs)


def build(config, info):
  model = make_model(config, info)
  mask_id, num_outputs = info.num_levels, info.num_levels
  T = info.shape[0] - 1
  K = config.model.get('block_size', 0) or T
  if T % K:
    raise ConfigError(f'model.block_size={K} must divide the window of {T} bytes')
  tx, schedule = optim.make_optimizer(config.optim, config.train.num_steps)
  sc = config.sample
  prompt = np.frombuffer(sc.prompt.encode('utf-8'), np.uint8).astype(np.int32)

  def logits_fn(params, rng=None, train=False):
    """z -> logits; with blocks, over the window under the block-causal mask
    (what the sampler reads: the blocks before are clean)."""
    rngs = {'dropout': rng} if train else {}
    mask = None if K == T else block_causal_mask(T, K)
    return lambda z: model.apply({'params': params}, z, train=train, rngs=rngs, mask_TxS=mask)[0]

  def denoiser(params, x, rng=None, train=False):
    """z -> logits of the noised window; with blocks, each block given the clean
    blocks of x before it (the two-stream pass)."""
    if K == T:
      return logits_fn(params, rng, train)
    rngs = {'dropout': rng} if train else {}
    L = x.shape[1]  # T, or fewer whole blocks (eval_step on a shorter text)
    positions, mask = jnp.concatenate([jnp.arange(L)] * 2), two_stream_mask(L, K)
    return lambda z: model.apply({'params': params}, jnp.concatenate([z, x], axis=1), train=train,
                                 rngs=rngs, positions_T=positions, mask_TxS=mask)[0][:, :L]

  def init(rng, batch):
    params = jax.jit(model.init)(rng, window(batch)[:1])['params']
    return base.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  def train_step(state, batch, rng):
    x = window(batch)
    B = x.shape[0]
    k_t, k_mask = jax.random.split(rng)
    index = base.device_index() * B + jnp.arange(B)
    t = train_times(k_t, index, B * _num_devices())

    def loss_fn(params, b):
      x, t = b['x'], b['t']
      fn = denoiser(params, x, base.device_key(rng), train=True)
      keys = base.example_keys(k_mask, x.shape[0])
      if K < T:  # the any-order form: unbiased, weights at most K (model.loss not used)
        per = block_nelbo(fn, x, keys, K, mask_id, num_outputs)
      elif config.model.loss == 'elbo':
        per = nelbo(fn, x, t, 1.0 / t, keys, mask_id, num_outputs)
      else:
        per = masked_mean_loss(fn, x, t, keys, mask_id, num_outputs)
      return per.mean() / x.shape[1]

    params, opt_state, metrics, _ = base.update(loss_fn, state.params, state.opt_state, tx,
                                                batch={'x': x, 't': t},
                                                microbatches=base.microbatches(config))
    metrics['lr'] = schedule(state.step)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def eval_step(state, batch, rng):
    x = window(batch)
    B = x.shape[0]
    mask = batch['mask'].astype(jnp.float32)
    keys = base.example_keys(rng, B)
    if K < T:  # whole blocks only: a shorter text (another model's sample) drops its tail
      x = x[:, :x.shape[1] - x.shape[1] % K]
      per = block_nelbo(denoiser(state.params, x), x, keys, K, mask_id, num_outputs)
    else:
      u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1)))(keys)
      t, weight = eval_times(u)
      per = nelbo(logits_fn(state.params), x, t, weight, keys, mask_id, num_outputs)
    return dict(nll=(per * mask).sum(), dims=mask.sum() * x.shape[1], examples=mask.sum())

  @functools.partial(jax.jit, static_argnames=('prompt_len', 'num_steps'))
  def _generate(params, prompt, rng, prompt_len, num_steps, temperature, top_k, top_p):
    return generate(logits_fn(params), prompt, prompt_len, num_steps, rng, mask_id, num_outputs,
                    temperature, top_k, top_p, K)

  def network_evals(steps):
    return (T // K - len(prompt) // K) * steps

  def sample(state, rng, num_samples, steps=None):
    """{'tokens': (N, T)}: sample.prompt, then T - len(prompt) bytes drawn in
    `steps` denoising steps (default sample.steps), per block with blocks."""
    steps = steps or sc.steps
    if not 0 <= len(prompt) < T:
      raise ConfigError(f'sample.prompt must be 0..{T - 1} bytes, got {len(prompt)}')
    buf = np.zeros((num_samples, T), np.int32)
    buf[:, :len(prompt)] = prompt
    z, _ = _generate(state.params, jnp.asarray(buf), rng, len(prompt), steps,
                     sc.temperature, sc.top_k, sc.top_p)
    return {'tokens': np.asarray(z)}

  def sampler_settings(step_counts=None, full_chain=False):
    """(label, `sample` keyword arguments, network evaluations per sample); with
    blocks, the counts are steps per block, at most the block's K bytes."""
    del full_chain
    if K == T:
      return [(f'{n} steps', dict(steps=n), n) for n in step_counts or (8, 16, 32, 64)]
    counts = [n for n in step_counts or () if n <= K] or sorted({1, max(K // 2, 1), K})
    return [(f'{n} steps per block of {K}', dict(steps=n), network_evals(n)) for n in counts]

  tools = dict(network_evals=network_evals(sc.steps),
               sampler_settings=sampler_settings, generate=_generate, logits_fn=logits_fn,
               mask_id=mask_id, block_size=K)
  return base.Family(name='masked_diffusion', init=init, train_step=train_step,
                     eval_step=eval_step, sample=sample, likelihood='bound',
                     state_fields=('model', 'data.seq_len'), tools=tools)


def _num_devices():
  """Devices on the data axis inside a mapped step; 1 outside one."""
  try:
    return jax.lax.psum(1, base.DATA_AXIS)
  except NameError:
    return 1
