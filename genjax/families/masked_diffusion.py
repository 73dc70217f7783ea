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
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from genjax import optim, sampling
from genjax.families import base
from genjax.nn.transformer import Transformer

TRAIN_EPS = 1e-3


def check_text(info):
  if info.modality != 'text':
    raise ValueError(f'the masked_diffusion family models byte text; dataset {info.name!r} '
                     f'holds {info.modality}')


def make_model(config, info):
  m = config.model
  return Transformer(vocab_size=info.num_levels + 1, max_len=info.shape[0] - 1,
                     num_layers=m.num_layers, num_heads=m.num_heads, width=m.width,
                     mlp_ratio=m.mlp_ratio, positions=m.positions, dropout=m.dropout,
                     dtype=jnp.dtype(m.dtype), causal=False)


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


def masked_nll(logits_fn, x_BxT, t_B, keys_B, mask_id, num_outputs):
  """(-log p(x_i | z_t) for every position (BxT), masked (BxT)) at z_t ~ q(z_t | x)."""
  z, masked = mask_tokens(keys_B, x_BxT, t_B, mask_id)
  logp = jax.nn.log_softmax(logits_fn(z)[..., :num_outputs].astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, x_BxT[..., None], axis=-1)[..., 0], masked


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
  without the 1/t weights that make the ELBO estimate heavy-tailed near t = 0."""
  nll_BxT, masked = masked_nll(logits_fn, x_BxT, t_B, keys_B, mask_id, num_outputs)
  count = jnp.sum(masked, axis=-1)
  return x_BxT.shape[1] * jnp.sum(jnp.where(masked, nll_BxT, 0.0), -1) / jnp.maximum(count, 1)


def train_times(rng, index_B, total):
  """Stratified t in [eps, 1]: one shared offset, example i in stratum i / total."""
  u = (jax.random.uniform(rng) + index_B / total) % 1.0
  return TRAIN_EPS + (1.0 - TRAIN_EPS) * u


def eval_times(u_B):
  """t = u^2 with its importance weight 1 / (t q(t)) = 2 / u: an unbiased,
  finite-variance estimate of the integral over all of (0, 1]."""
  u = jnp.maximum(u_B, 1e-12)
  return u * u, 2.0 / u


def unmask_order(rng, B, L, prompt_len):
  """(B, L) rank of each position in the unmasking order: the prompt first (its
  ranks are below prompt_len, so it is never masked), the rest at random."""
  scores = jax.random.uniform(rng, (B, L))
  scores = jnp.where(jnp.arange(L) < prompt_len, -1.0, scores)
  return jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)


def generate(logits_fn, prompt_BxL, prompt_len, num_steps, rng, mask_id, num_outputs,
             temperature=1.0, top_k=0, top_p=1.0):
  """Fills positions prompt_len..L-1 of `prompt_BxL` in `num_steps` steps (a
  `lax.scan`); returns (tokens BxL, masked counts after each step num_steps x B)."""
  B, L = prompt_BxL.shape
  M = L - prompt_len
  k_order, k_run = jax.random.split(rng)
  rank = unmask_order(k_order, B, L, prompt_len)
  z = jnp.where(rank < prompt_len, prompt_BxL, mask_id)

  def step(z, xs):
    i, key = xs
    still_masked = jnp.round(M * (1.0 - (i + 1) / num_steps)).astype(jnp.int32)
    reveal = (z == mask_id) & (rank < L - still_masked)
    drawn = sampling.sample_tokens(key, logits_fn(z)[..., :num_outputs], temperature, top_k, top_p)
    z = jnp.where(reveal, drawn, z)
    return z, jnp.sum(z == mask_id, axis=-1)

  z, counts = jax.lax.scan(step, z, (jnp.arange(num_steps), jax.random.split(k_run, num_steps)))
  return z, counts


def build(config, info):
  check_text(info)
  model = make_model(config, info)
  mask_id, num_outputs = info.num_levels, info.num_levels
  T = info.shape[0] - 1
  tx, schedule = optim.make_optimizer(config.optim, config.train.num_steps)
  sc = config.sample

  def logits_fn(params, rng=None, train=False):
    rngs = {'dropout': rng} if train else {}
    return lambda z: model.apply({'params': params}, z, train=train, rngs=rngs)[0]

  def init(rng, batch):
    params = jax.jit(model.init)(rng, window(batch)[:1])['params']
    return base.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  def train_step(state, batch, rng):
    x = window(batch)
    B = x.shape[0]
    k_t, k_mask = jax.random.split(rng)
    index = base.device_index() * B + jnp.arange(B)
    t = train_times(k_t, index, B * _num_devices())

    def loss_fn(params):
      fn, keys = logits_fn(params, base.device_key(rng), train=True), base.example_keys(k_mask, B)
      if config.model.loss == 'elbo':
        per = nelbo(fn, x, t, 1.0 / t, keys, mask_id, num_outputs)
      else:
        per = masked_mean_loss(fn, x, t, keys, mask_id, num_outputs)
      return per.mean() / x.shape[1]

    params, opt_state, metrics, _ = base.update(loss_fn, state.params, state.opt_state, tx)
    metrics['lr'] = schedule(state.step)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def eval_step(state, batch, rng):
    x = window(batch)
    B = x.shape[0]
    mask = batch['mask'].astype(jnp.float32)
    keys = base.example_keys(rng, B)
    u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1)))(keys)
    t, weight = eval_times(u)
    per = nelbo(logits_fn(state.params), x, t, weight, keys, mask_id, num_outputs)
    return dict(nll=(per * mask).sum(), dims=mask.sum() * x.shape[1], examples=mask.sum())

  @functools.partial(jax.jit, static_argnames=('prompt_len', 'num_steps'))
  def _generate(params, prompt, rng, prompt_len, num_steps, temperature, top_k, top_p):
    return generate(logits_fn(params), prompt, prompt_len, num_steps, rng, mask_id, num_outputs,
                    temperature, top_k, top_p)

  def sample(state, rng, num_samples, steps=None):
    """{'tokens': (N, T)}: sample.prompt, then T - len(prompt) bytes drawn in
    `steps` denoising steps (default sample.steps)."""
    steps = steps or sc.steps
    prompt = np.frombuffer(sc.prompt.encode('utf-8'), np.uint8).astype(np.int32)
    if not 0 <= len(prompt) < T:
      raise ValueError(f'sample.prompt must be 0..{T - 1} bytes, got {len(prompt)}')
    buf = np.zeros((num_samples, T), np.int32)
    buf[:, :len(prompt)] = prompt
    z, _ = _generate(state.params, jnp.asarray(buf), rng, len(prompt), steps,
                     sc.temperature, sc.top_k, sc.top_p)
    return {'tokens': np.asarray(z)}

  def sampler_settings(step_counts=(8, 16, 32, 64)):
    """(label, `sample` keyword arguments, network evaluations per sample)."""
    return [(f'{n} steps', dict(steps=n), n) for n in step_counts]

  tools = dict(network_evals=sc.steps, sampler_settings=sampler_settings, generate=_generate,
               logits_fn=logits_fn, mask_id=mask_id)
  return base.Family(name='masked_diffusion', init=init, train_step=train_step,
                     eval_step=eval_step, sample=sample, likelihood='bound',
                     state_fields=('model', 'data.seq_len'), tools=tools)


def _num_devices():
  """Devices on the data axis inside a pmapped step; 1 outside one."""
  try:
    return jax.lax.psum(1, base.DATA_AXIS)
  except NameError:
    return 1
