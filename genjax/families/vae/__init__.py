"""Variational autoencoder family: ELBO training (beta, KL warm-up, or the
IWAE objective), IWAE likelihood bounds, latent-space tools, anomaly scores.

train_step minimises  recon + beta_t * KL  per example (model.train_k = 1),
with beta_t rising linearly from 0 to model.beta over model.kl_warmup_steps
and the KL in closed form; model.train_k > 1 trains on the IWAE bound with
that many samples instead (the beta and the warm-up then scale log p(z) -
log q(z|x) inside the weights). model.exclude_label >= 0 gives the examples of
that class zero weight, so a held-out class can serve as anomalies.

eval_step returns, summed over the batch: 'nll' = -IWAE bound with K =
model.eval_k, 'nll_k<K>' for each smaller K in model.eval_ks, 'nll_k1' = -ELBO
(estimated with all K samples), 'recon', 'kl' (closed form), 'dims' and
'examples'. All are upper bounds on the NLL (likelihood='bound').

tools: 'figures' (reconstructions, prior samples, interpolations, latent map),
'score' (per-example negative IWAE bound with K = model.score_k, the anomaly
score), 'encode', 'decode', 'reconstruct', and for images 'complete' (missing
pixels by pseudo-Gibbs imputation). The objective is `objective.per_example_loss`.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from genjax import optim
from genjax.families import base
from genjax.families.vae import figures as figures_lib
from genjax.families.vae import objective
from genjax.families.vae.model import VAE, decoder_draw, decoder_mean, gaussian_kl, iwae_bounds


MODALITIES = ('image', 'points')


def default_likelihood(info):
  if info.modality == 'points':
    return 'gaussian'
  return 'categorical' if info.num_levels <= 64 else 'logistic'


def make_model(config, info):
  m = config.model
  likelihood = m.likelihood if m.likelihood != 'auto' else default_likelihood(info)
  return VAE(shape=tuple(info.shape), likelihood=likelihood, num_levels=info.num_levels,
             latent_dim=m.latent_dim, channels=tuple(m.channels), hidden=m.hidden,
             num_layers=m.num_layers, dropout=m.dropout, decoder=m.decoder,
             dtype=base.compute_dtype(m))


def data_of(batch):
  return batch['image'] if 'image' in batch else batch['x']


def _judge_blurry(table, data):
  """Sharpness (variance of the Laplacian, relative to held-out data) of the
  VAE's decoder means and draws against every other family's samples."""
  del data
  vae = [r for r in table.values() if r['family'] == 'vae' and 'sharpness' in r]
  if not vae:
    return 'no image samples', 'not measured'
  row = vae[0]
  # The means are the other sampler offered when the samples are draws (sampler_settings).
  means = next((p for p in row.get('cost_points', [])
                if p.get('kwargs', {}).get('decode_how') == 'mean'), None)
  if means is None or 'sharpness' not in means:
    return 'the VAE ran without both decoder draws and means', 'not measured'
  draws = row['sharpness']
  others = {k: r['sharpness'] for k, r in table.items() if r['family'] != 'vae' and 'sharpness' in r}
  blurriest = means['sharpness'] < min(others.values(), default=float('inf')) and means['sharpness'] < 1
  evidence = (f"sharpness relative to held-out data: decoder means {means['sharpness']:.2f}, decoder "
              f"draws {draws:.2f}; " + ', '.join(f'{k} {v:.2f}' for k, v in sorted(others.items())))
  if blurriest and draws < 1:
    return evidence, 'supported'
  if blurriest:
    return evidence + ' (the blur is in the means; draws are as sharp as the data or sharper)', \
        'partly supported'
  return evidence, 'not supported'


CLAIM = base.Claim('VAEs are blurry', _judge_blurry)


def pseudo_gibbs(encode, decode, rng, images, known_mask, num_levels, rounds=50):
  """Images with the pixels where `known_mask` is False imputed by pseudo-Gibbs
  sampling (Rezende et al. 2014, appendix F): from uniform noise, `rounds` times
  encode, draw z ~ q(z|x), decode, and put the known pixels back; the last round
  decodes the mean, rounded to the grey levels. `encode(x) -> (mean, logvar)`,
  `decode(z, rng, how)` with how 'mean' or None (the config's default)."""
  x = np.where(known_mask, images,
               np.asarray(jax.random.uniform(rng, images.shape)) * float(num_levels - 1))
  for i in range(rounds):
    last = i == rounds - 1
    mean, logvar = encode(x)
    eps = np.asarray(jax.random.normal(jax.random.fold_in(rng, i), mean.shape))
    z = mean + np.exp(0.5 * logvar) * eps
    x_new = decode(z, jax.random.fold_in(rng, 1000 + i), 'mean' if last else None)
    x = np.where(known_mask, images, x_new)
  return np.clip(np.round(x), 0, num_levels - 1)


def build(config, info):
  model = make_model(config, info)
  m = config.model
  tx, schedule = optim.make_optimizer(config.optim, config.train.num_steps)
  eval_ks = sorted(set(int(k) for k in m.eval_ks if k > 1) | {int(m.eval_k)})
  chunk = int(np.gcd.reduce(eval_ks + [int(m.eval_chunk)]))
  dims = float(np.prod(info.shape))

  def init(rng, batch):
    x = data_of(batch)[:1]
    z = jnp.zeros((1, m.latent_dim), jnp.float32)
    params = jax.jit(functools.partial(model.init, train=False))(rng, x, z)['params']
    return base.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  def train_step(state, batch, rng):
    x = data_of(batch)
    weight = jnp.ones(x.shape[0], jnp.float32)
    if m.exclude_label >= 0 and 'label' in batch:
      weight = (batch['label'] != m.exclude_label).astype(jnp.float32)
    # Normalised by the global count of kept examples, so that the mean over
    # devices of the per-device losses is the mean over the global batch.
    num_devices = jax.lax.psum(1, base.DATA_AXIS)
    count = jnp.maximum(jax.lax.psum(weight.sum(), base.DATA_AXIS), 1.0) / num_devices
    warm = jnp.minimum(1.0, (state.step + 1) / max(m.kl_warmup_steps, 1))
    beta = m.beta * warm

    k = base.microbatches(config)

    def loss_fn(params, b):
      loss, recon, kl = objective.per_example_loss(model, params, b['x'], rng, beta, m.train_k)
      # A microbatch's sums over its share of the count: their mean over the
      # k microbatches is the batch's.
      mean = lambda v: (v * b['weight']).sum() * k / count
      return mean(loss), {'recon': mean(recon), 'kl': mean(kl), 'elbo': -mean(recon + kl)}

    params, opt_state, metrics, aux = base.update(loss_fn, state.params, state.opt_state, tx,
                                                  batch=dict(x=x, weight=weight), microbatches=k,
                                                  has_aux=True)
    metrics.update(aux, lr=schedule(state.step), beta=beta)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def eval_step(state, batch, rng):
    x = data_of(batch)
    mask = batch['mask'].astype(jnp.float32)
    keys = base.example_keys(rng, x.shape[0])
    bounds, elbo, logpx = iwae_bounds(model, state.params, x, keys, eval_ks, chunk)
    mean, logvar = model.apply({'params': state.params}, x, method=model.encode)
    total = lambda v: (v * mask).sum()
    sums = {'nll': total(-bounds[int(m.eval_k)]), 'nll_k1': total(-elbo),
            'recon': total(-logpx), 'kl': total(gaussian_kl(mean, logvar)),
            'dims': mask.sum() * dims, 'examples': mask.sum()}
    for k in eval_ks:
      if k != m.eval_k:
        sums[f'nll_k{k}'] = total(-bounds[k])
    return sums

  # ------------------------------------------------------------------ host-side tools
  @jax.jit
  def _encode(params, x):
    return model.apply({'params': params}, x, method=model.encode)

  @functools.partial(jax.jit, static_argnums=(3,))
  def _decode(params, z, rng, how):
    out = model.apply({'params': params}, z, method=model.decode)
    if how == 'mean':
      return decoder_mean(model.likelihood, out, model.num_levels)
    return decoder_draw(model.likelihood, out, model.num_levels, rng)

  score_ks = (int(m.score_k),)
  score_chunk = int(np.gcd(int(m.score_k), int(m.eval_chunk)))

  @jax.jit
  def _score(params, x, rng):
    bounds, _, _ = iwae_bounds(model, params, x, base.example_keys(rng, x.shape[0]), score_ks,
                               score_chunk)
    return -bounds[score_ks[0]]

  def encode(state, x):
    """(mean, logvar) of q(z|x), numpy."""
    return tuple(np.asarray(a) for a in _encode(state.params, jnp.asarray(x)))

  def decode(state, z, rng=None, how=None):
    """x from z: the decoder's mean (default config.sample.decode) or a draw."""
    how = how or config.sample.decode
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return np.asarray(_decode(state.params, jnp.asarray(z, jnp.float32), rng, how))

  def reconstruct(state, x, rng, how=None):
    """Decodes a posterior draw z ~ q(z|x)."""
    mean, logvar = encode(state, x)
    k1, k2 = jax.random.split(rng)
    z = mean + np.exp(0.5 * logvar) * np.asarray(jax.random.normal(k1, mean.shape))
    return decode(state, z, k2, how)

  def score(state, rng, batch):
    """(B,) anomaly scores: -IWAE bound with K = model.score_k (nats; higher = more anomalous)."""
    x = data_of(batch)
    out = []
    for i in range(0, len(x), 256):  # bounded memory for any batch size
      out.append(np.asarray(_score(state.params, jnp.asarray(x[i:i + 256]), jax.random.fold_in(rng, i))))
    return np.concatenate(out)

  def sample(state, rng, num_samples, decode_how=None):
    """z ~ N(0, I), then x ~ p(x|z) ('draw') or E[x|z] ('mean'; default
    config.sample.decode)."""
    k1, k2 = jax.random.split(rng)
    z = jax.random.normal(k1, (num_samples, m.latent_dim))
    x = decode(state, z, k2, decode_how)
    return {'image': x} if info.modality == 'image' else {'x': x}

  def sampler_settings(step_counts=(), full_chain=False):
    del step_counts, full_chain
    other = 'mean' if config.sample.decode == 'draw' else 'draw'
    label = 'decoder means E[x|z]' if other == 'mean' else 'decoder draws x ~ p(x|z)'
    return [(label, dict(decode_how=other), 1)]

  # network_evals: a sample is one decoder pass.
  tools = dict(encode=encode, decode=decode, reconstruct=reconstruct, score=score, network_evals=1,
               sampler_settings=sampler_settings, claim=CLAIM)
  if info.modality == 'image':
    def complete(state, rng, images, known_mask):
      """The pixels where `known_mask` is False, imputed by `pseudo_gibbs`."""
      return pseudo_gibbs(functools.partial(encode, state), functools.partial(decode, state), rng,
                          images, known_mask, info.num_levels)
    tools['complete'] = complete
  tools['figures'] = functools.partial(figures_lib.make_figures, tools, info, config)
  return base.Family(name='vae', init=init, train_step=train_step, eval_step=eval_step,
                     sample=sample, likelihood='bound', headline='loss',
                     finite=('loss', 'recon', 'kl'),
                     advice='lower optim.lr, raise optim.warmup_steps or model.kl_warmup_steps',
                     tools=tools)
