"""Invertible layers. Each maps x -> (z, log_det) with `forward` and z -> x
with `inverse`; `log_det` (B,) is log|det dz/dx| per example, in float32.

Images are (B, H, W, C); vectors (B, D) are treated as (B, C=D) with no
spatial axes, so ActNorm, the coupling's half split and the LU linear map
work on both.
"""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg


def _sum_except_batch(x):
  return x.reshape(x.shape[0], -1).sum(-1)


def _spatial(x):
  """Number of positions that share a channel's parameters (1 for vectors)."""
  return int(np.prod(x.shape[1:-1]))


class FlowLayer(nn.Module):
  """A layer written once as `__call__(x, inverse)`; `forward` and `inverse`
  are the two directions of the contract."""

  def forward(self, x):
    return self(x, inverse=False)

  def inverse(self, z):
    return self(z, inverse=True)


class ActNorm(FlowLayer):
  """Per-channel affine z = (x + bias) * exp(log_scale) (Glow).

  Data-dependent init: the first call under `Module.init` sets bias and scale
  so that the init batch leaves with zero mean and unit variance per channel.
  """
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x, inverse=False):
    axes = tuple(range(x.ndim - 1))
    bias = self.param('bias', lambda _: -x.mean(axes).astype(jnp.float32))
    log_scale = self.param('log_scale',
                           lambda _: -jnp.log(x.std(axes).astype(jnp.float32) + self.eps))
    if inverse:
      return x * jnp.exp(-log_scale) - bias
    z = (x + bias) * jnp.exp(log_scale)
    log_det = jnp.full((x.shape[0],), _spatial(x) * log_scale.sum())
    return z, log_det


def checkerboard(h, w, parity):
  """(h, w, 1) float mask: 1 on the pixels that condition the others."""
  ij = np.add.outer(np.arange(h), np.arange(w))
  return jnp.asarray(((ij + parity) % 2 == 0)[..., None], jnp.float32)


class AffineCoupling(FlowLayer):
  """RealNVP affine coupling: half of x conditions a scale and shift of the other half.

  mask: 'checkerboard' (images, pixels in a checkerboard) or 'channel' (the
  first/second half of the last axis: channels of images, a half split of
  vectors). `parity` swaps the halves. `net(out_channels)` builds the
  conditioner; its last layer is zero-initialised so the layer starts as the
  identity. log_s = scale * tanh(raw) keeps early steps stable.
  """
  mask: str
  parity: int
  net: Callable[[int], nn.Module]

  @nn.compact
  def __call__(self, x, inverse=False):
    C = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (1,))
    if self.mask == 'checkerboard':
      m = checkerboard(x.shape[1], x.shape[2], self.parity)
      cond = jnp.concatenate([x * m, jnp.broadcast_to(m, x.shape[:-1] + (1,))], -1)
      raw_s, t = jnp.split(self.net(2 * C)(cond), 2, -1)
      log_s = scale * jnp.tanh(raw_s) * (1 - m)
      t = t * (1 - m)
      if inverse:
        return x * m + (1 - m) * (x - t) * jnp.exp(-log_s)
      return x * m + (1 - m) * (x * jnp.exp(log_s) + t), _sum_except_batch(log_s)
    if self.mask != 'channel':
      raise ValueError(f"coupling mask must be 'checkerboard' or 'channel', got {self.mask!r}")
    k = C // 2 if self.parity == 0 else C - C // 2
    a, b = x[..., :k], x[..., k:]
    if self.parity:  # condition on the second half
      b, a = x[..., :C - k], x[..., C - k:]
    raw_s, t = jnp.split(self.net(2 * b.shape[-1])(a), 2, -1)
    log_s = scale * jnp.tanh(raw_s)
    if inverse:
      b = (b - t) * jnp.exp(-log_s)
      return jnp.concatenate([b, a] if self.parity else [a, b], -1)
    b = b * jnp.exp(log_s) + t
    z = jnp.concatenate([b, a] if self.parity else [a, b], -1)
    return z, _sum_except_batch(log_s)


def _lu_init(channels, seed):
  """P, L, U, sign(s), log|s| of a random rotation (the Glow initialisation)."""
  rng = np.random.default_rng(seed)
  w = np.linalg.qr(rng.standard_normal((channels, channels)))[0]
  p, lower, upper = scipy.linalg.lu(w)
  s = np.diag(upper)
  return p, lower, np.triu(upper, 1), np.sign(s), np.log(np.abs(s))


class InvertibleLinear(FlowLayer):
  """z = W x over channels (an invertible 1x1 convolution for images),
  W = P L (U + diag(sign * exp(log_s))), LU-parametrised so that
  log|det W| = sum(log_s) (Glow). P and the signs are fixed by `seed`."""
  seed: int = 0

  @nn.compact
  def __call__(self, x, inverse=False):
    C = x.shape[-1]
    p, l0, u0, sign, log_s0 = _lu_init(C, self.seed)
    lower = self.param('lower', lambda _: jnp.asarray(l0, jnp.float32))
    upper = self.param('upper', lambda _: jnp.asarray(u0, jnp.float32))
    log_s = self.param('log_s', lambda _: jnp.asarray(log_s0, jnp.float32))
    eye = jnp.eye(C)
    w = (jnp.asarray(p, jnp.float32) @ (jnp.tril(lower, -1) + eye)
         @ (jnp.triu(upper, 1) + jnp.diag(sign * jnp.exp(log_s))))
    if inverse:
      return x @ jnp.linalg.inv(w).T
    log_det = jnp.full((x.shape[0],), _spatial(x) * log_s.sum())
    return x @ w.T, log_det


class Squeeze(FlowLayer):
  """(B, H, W, C) -> (B, H/2, W/2, 4C): each 2x2 patch becomes 4 channels."""

  def __call__(self, x, inverse=False):
    B, H, W, C = x.shape
    if inverse:
      x = x.reshape(B, H, W, 2, 2, C // 4).transpose(0, 1, 3, 2, 4, 5)
      return x.reshape(B, 2 * H, 2 * W, C // 4)
    if H % 2 or W % 2:
      raise ValueError(f'squeeze needs even height and width, got {H}x{W}')
    x = x.reshape(B, H // 2, 2, W // 2, 2, C).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H // 2, W // 2, 4 * C), jnp.zeros((B,), jnp.float32)


class Permutation(FlowLayer):
  """A fixed permutation of the last axis: 'reverse', or random from `seed`."""
  kind: str = 'reverse'
  seed: int = 0

  def _perm(self, n):
    if self.kind == 'reverse':
      return np.arange(n)[::-1].copy()
    return np.random.default_rng(self.seed).permutation(n)

  def __call__(self, x, inverse=False):
    perm = self._perm(x.shape[-1])
    if inverse:
      return x[..., np.argsort(perm)]
    return x[..., perm], jnp.zeros((x.shape[0],), jnp.float32)


class Logit(FlowLayer):
  """y in [0, 1] -> logit(alpha + (1 - 2 alpha) y) (RealNVP's preprocessing),
  so that a bounded image becomes unbounded; the log-det keeps the density exact."""
  alpha: float = 0.05

  def __call__(self, x, inverse=False):
    a = self.alpha
    if inverse:
      return (jax.nn.sigmoid(x) - a) / (1 - 2 * a)
    p = a + (1 - 2 * a) * x
    z = jnp.log(p) - jnp.log1p(-p)
    log_det = _sum_except_batch(np.log(1 - 2 * a) - jnp.log(p) - jnp.log1p(-p))
    return z, log_det


class ConvNet(nn.Module):
  """Conditioner for image couplings: conv 3x3, residual blocks, zero-init conv 3x3.
  Computes in `dtype` (bfloat16: mixed precision) and returns float32, so that
  the coupling's scale, shift and log-determinant are float32."""
  out_channels: int
  hidden: int
  num_blocks: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = self.dtype
    h = nn.relu(nn.Conv(self.hidden, (3, 3), dtype=d)(x))
    for _ in range(self.num_blocks):
      r = nn.relu(nn.Conv(self.hidden, (3, 3), dtype=d)(h))
      h = h + nn.Conv(self.hidden, (1, 1), dtype=d)(r)
      h = nn.relu(h)
    out = nn.Conv(self.out_channels, (3, 3), kernel_init=nn.initializers.zeros, dtype=d)(h)
    return out.astype(jnp.float32)


class MLP(nn.Module):
  """Conditioner for vector couplings; the last layer is zero-initialised."""
  out_features: int
  hidden: int
  depth: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for _ in range(self.depth):
      x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
    out = nn.Dense(self.out_features, kernel_init=nn.initializers.zeros, dtype=self.dtype)(x)
    return out.astype(jnp.float32)
