"""VAE networks, decoder likelihoods and the bounds (ELBO, chunked IWAE).

The encoder maps x to a diagonal Gaussian q(z|x) = N(mean, exp(logvar)); the
prior is N(0, I); the decoder's likelihood p(x|z) fits the data:
  'categorical'  images with few grey levels (digits: 17): a softmax per subpixel
  'logistic'     256-level images: a discretised logistic per subpixel
  'gaussian'     points (toy2d): a diagonal Gaussian with a learned variance
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.errors import ConfigError

LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- densities

def gaussian_kl(mean_BxZ, logvar_BxZ):
  """KL(N(mean, exp(logvar)) || N(0, I)) per example, summed over Z (closed form)."""
  return 0.5 * jnp.sum(jnp.exp(logvar_BxZ) + mean_BxZ ** 2 - 1.0 - logvar_BxZ, axis=-1)


def std_normal_logpdf(z_xZ):
  return -0.5 * jnp.sum(z_xZ ** 2 + LOG_2PI, axis=-1)


def posterior_logpdf(eps_xZ, logvar_xZ):
  """log q(z|x) at z = mean + exp(logvar / 2) * eps, from the standardised eps."""
  return -0.5 * jnp.sum(eps_xZ ** 2 + logvar_xZ + LOG_2PI, axis=-1)


def _log1mexp(a):
  """log(1 - exp(a)) for a < 0, accurate on both sides of -log 2."""
  return jnp.where(a > -0.6931, jnp.log(-jnp.expm1(a)), jnp.log1p(-jnp.exp(a)))


def logistic_logprob(x_int, mean, log_scale, num_levels):
  """log P(x) of a logistic discretised to `num_levels` bins on [-1, 1].

  Bins are [x - h, x + h] with h = 1 / (num_levels - 1); the end bins extend to
  infinity, so the probabilities of the levels sum to one. The bin mass is a
  difference of sigmoids taken on the side of the distribution where they are
  small (no cancellation when mean lies far from x).
  """
  h = 1.0 / (num_levels - 1)
  xs = 2.0 * x_int.astype(jnp.float32) * h - 1.0
  inv = jnp.exp(-log_scale)
  a = (xs + h - mean) * inv  # upper edge
  b = (xs - h - mean) * inv  # lower edge
  # P = sigmoid(a) - sigmoid(b) = sigmoid(-b) - sigmoid(-a); pick the tail that is small.
  left = (a + b) < 0
  hi = jnp.where(left, a, -b)
  lo = jnp.where(left, b, -a)
  log_hi, log_lo = jax.nn.log_sigmoid(hi), jax.nn.log_sigmoid(lo)
  middle = log_hi + _log1mexp(jnp.minimum(log_lo - log_hi, -1e-6))
  first = jax.nn.log_sigmoid(a)  # x = 0: (-inf, x + h]
  last = jax.nn.log_sigmoid(-b)  # x = L - 1: [x - h, inf)
  return jnp.where(x_int == 0, first, jnp.where(x_int == num_levels - 1, last, middle))


def decoder_logprob(kind, out, x, num_levels):
  """log p(x|z) per example, summed over all dimensions of x.

  `out` is the decoder's output for x's batch shape: categorical logits
  (..., L) per subpixel; logistic (..., 2) mean and log-scale; gaussian (..., 2)
  mean and log-variance per coordinate.
  """
  if kind == 'categorical':
    logp = jax.nn.log_softmax(out.astype(jnp.float32), axis=-1)
    ll = jnp.take_along_axis(logp, x.astype(jnp.int32)[..., None], axis=-1)[..., 0]
  elif kind == 'logistic':
    ll = logistic_logprob(x, out[..., 0], jnp.maximum(out[..., 1], -7.0), num_levels)
  elif kind == 'gaussian':
    mean, logvar = out[..., 0], out[..., 1]
    ll = -0.5 * ((x - mean) ** 2 * jnp.exp(-logvar) + logvar + LOG_2PI)
  else:
    raise ConfigError(f"model.likelihood must be 'categorical', 'logistic' or 'gaussian', got {kind!r}")
  return ll.reshape(ll.shape[:x.ndim - _event_ndim(kind, x)] + (-1,)).sum(-1)


def _event_ndim(kind, x):
  return 1 if kind == 'gaussian' else 3


def decoder_mean(kind, out, num_levels):
  """E[x|z] in data units (images: 0..L-1)."""
  if kind == 'categorical':
    return jnp.sum(jax.nn.softmax(out, -1) * jnp.arange(num_levels, dtype=jnp.float32), -1)
  if kind == 'logistic':
    return jnp.clip((out[..., 0] + 1.0) * 0.5 * (num_levels - 1), 0, num_levels - 1)
  return out[..., 0]


def decoder_draw(kind, out, num_levels, rng):
  """x ~ p(x|z)."""
  if kind == 'categorical':
    return jax.random.categorical(rng, out, axis=-1)
  if kind == 'logistic':
    u = jax.random.uniform(rng, out.shape[:-1], minval=1e-5, maxval=1 - 1e-5)
    xs = out[..., 0] + jnp.exp(out[..., 1]) * (jnp.log(u) - jnp.log1p(-u))
    return jnp.clip(jnp.round((xs + 1.0) * 0.5 * (num_levels - 1)), 0, num_levels - 1).astype(jnp.int32)
  return out[..., 0] + jnp.exp(0.5 * out[..., 1]) * jax.random.normal(rng, out.shape[:-1])


# ----------------------------------------------------------------------------- networks

class VAE(nn.Module):
  """Encoder and decoder. Images use strided convolutions (each of `channels`
  halves H and W, the decoder mirrors them); points use MLPs."""
  shape: tuple        # one example: (H, W, C) or (D,)
  likelihood: str
  num_levels: int     # images; 0 for points
  latent_dim: int
  channels: tuple = (32, 64)
  hidden: int = 256
  num_layers: int = 2  # dense layers after the convolutions (or of the MLP)
  dropout: float = 0.0
  decoder: str = 'conv'  # images: 'conv' (mirrors the encoder) or 'mlp' (cheaper for K = 1000)
  dtype: Any = jnp.float32  # of the layers' computation; their outputs return as float32

  def setup(self):
    self.images = len(self.shape) == 3
    n = len(self.channels) if self.images else 0
    d = self.dtype
    self.enc_convs = [nn.Conv(c, (3, 3), strides=(2, 2), dtype=d) for c in self.channels[:n]]
    self.enc_dense = [nn.Dense(self.hidden, dtype=d) for _ in range(self.num_layers)]
    self.enc_out = nn.Dense(2 * self.latent_dim, dtype=d)
    self.dec_dense = [nn.Dense(self.hidden, dtype=d) for _ in range(self.num_layers)]
    self.drop = nn.Dropout(self.dropout)
    if self.images and self.decoder not in ('conv', 'mlp'):
      raise ConfigError(f"model.decoder must be 'conv' or 'mlp', got {self.decoder!r}")
    if self.images and self.decoder == 'mlp':
      H, W, C = self.shape
      per = self.num_levels if self.likelihood == 'categorical' else 2
      self.dec_out = nn.Dense(H * W * C * per, dtype=d)
    elif self.images:
      H, W, C = self.shape
      self.base_hw = (H // 2 ** n, W // 2 ** n)
      self.dec_proj = nn.Dense(self.base_hw[0] * self.base_hw[1] * self.channels[-1], dtype=d)
      self.dec_convs = [nn.ConvTranspose(c, (3, 3), strides=(2, 2), dtype=d)
                        for c in reversed(self.channels[:-1])] + [
                            nn.ConvTranspose(self.channels[0], (3, 3), strides=(2, 2), dtype=d)]
      per = self.num_levels if self.likelihood == 'categorical' else 2
      self.dec_out = nn.Conv(C * per, (3, 3), dtype=d)
    else:
      self.dec_out = nn.Dense(self.shape[0] * 2, dtype=d)

  def _in(self, x):
    if self.images:  # levels -> [-1, 1]
      return x.astype(jnp.float32) * (2.0 / (self.num_levels - 1)) - 1.0
    return x.astype(jnp.float32)

  def encode(self, x, train=False):
    """(mean, logvar), each BxZ."""
    h = self._in(x)
    for conv in self.enc_convs:
      h = nn.silu(conv(h))
    h = h.reshape(h.shape[0], -1)
    for dense in self.enc_dense:
      h = self.drop(nn.silu(dense(h)), deterministic=not train)
    mean, logvar = jnp.split(self.enc_out(h).astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, -12.0, 8.0)

  def decode(self, z_NxZ, train=False):
    """The likelihood's parameters, (N,) + shape + (L or 2,)."""
    h = z_NxZ
    for dense in self.dec_dense:
      h = self.drop(nn.silu(dense(h)), deterministic=not train)
    if not self.images:
      return self.dec_out(h).astype(jnp.float32).reshape(h.shape[0], self.shape[0], 2)
    if self.decoder == 'mlp':
      return self.dec_out(h).astype(jnp.float32).reshape((h.shape[0],) + tuple(self.shape) + (-1,))
    h = nn.silu(self.dec_proj(h)).reshape((h.shape[0],) + self.base_hw + (self.channels[-1],))
    for conv in self.dec_convs:
      h = nn.silu(conv(h))
    H, W, C = self.shape
    return self.dec_out(h)[:, :H, :W].astype(jnp.float32).reshape(h.shape[0], H, W, C, -1)

  def __call__(self, x, z, train=False):  # for init: touches every parameter
    return self.encode(x, train), self.decode(z, train)


# ----------------------------------------------------------------------------- bounds

def log_weights(model, params, x, mean, logvar, eps_KxBxZ, train=False, rng=None):
  """log w = log p(x|z) + log p(z) - log q(z|x) for z = mean + sigma * eps: (K, B),
  with log p(x|z) (K, B) as well."""
  K, B, Z = eps_KxBxZ.shape
  z = mean + jnp.exp(0.5 * logvar) * eps_KxBxZ
  rngs = {'dropout': rng} if train else {}
  out = model.apply({'params': params}, z.reshape(K * B, Z), train, method=model.decode, rngs=rngs)
  x_rep = jnp.broadcast_to(x, (K,) + x.shape).reshape((K * B,) + x.shape[1:])
  logpx = decoder_logprob(model.likelihood, out, x_rep, model.num_levels).reshape(K, B)
  return logpx + std_normal_logpdf(z) - posterior_logpdf(eps_KxBxZ, logvar), logpx


def draw_eps(keys_B, index, num, latent_dim):
  """(num, B, Z) standard normals; example b's draws depend on its key and `index` only."""
  eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, index), (num, latent_dim)))(keys_B)
  return jnp.swapaxes(eps, 0, 1)


def iwae_bounds(model, params, x, keys_B, ks, chunk):
  """IWAE bounds log (1/K) sum_k w_k for each K in `ks` (ascending), per example,
  from one stream of K = max(ks) samples drawn `chunk` at a time (so K = 1000
  fits in memory): the bound for a smaller K uses the first K samples.

  Also returns the mean of log w over all samples (an unbiased estimate of the
  ELBO, i.e. of the K = 1 bound, with low variance) and of log p(x|z).
  Returns ({K: (B,)}, elbo (B,), logpx (B,)).
  """
  ks = sorted(ks)
  if any(k % chunk for k in ks):
    raise ValueError(f'every K in {ks} must be a multiple of the chunk size {chunk}')
  mean, logvar = model.apply({'params': params}, x, method=model.encode)
  B = x.shape[0]

  def body(carry, i):
    m, s, tot, totx = carry
    lw, lpx = log_weights(model, params, x, mean, logvar, draw_eps(keys_B, i, chunk, mean.shape[-1]))
    m_new = jnp.maximum(m, lw.max(0))
    s = s * jnp.exp(m - m_new) + jnp.exp(lw - m_new).sum(0)
    return (m_new, s, tot + lw.sum(0), totx + lpx.sum(0)), None

  zeros = jnp.zeros((B,), jnp.float32)
  carry = (jnp.full((B,), -jnp.inf), zeros, zeros, zeros)
  bounds, done = {}, 0
  for k in ks:  # consecutive segments of one sample stream
    carry, _ = jax.lax.scan(body, carry, jnp.arange(done // chunk, k // chunk))
    done = k
    bounds[k] = carry[0] + jnp.log(carry[1]) - math.log(k)
  return bounds, carry[2] / done, carry[3] / done
