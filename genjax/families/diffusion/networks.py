"""Denoisers: a U-Net (images), a DiT-style patch transformer (images) and an
MLP (points). Each maps (z, t, label) to an output the shape of z, or with
`out_levels` > 0 to per-level logits (B, H, W, C, L) for the lattice head.

Time t is the float step in [0, T]; labels equal to `num_classes` are the
null class of classifier-free guidance. `dtype` is the computation's
(bfloat16 for mixed precision): parameters stay float32, normalisation
statistics and attention softmaxes are computed in float32, and the output is
float32.
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from genjax.errors import ConfigError
from genjax.nn.transformer import Block


def timestep_embedding(t_B, dim, max_period=10000.0):
  """Sinusoidal embedding of a float step (B,) -> (B, dim)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t_B.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class Conditioning(nn.Module):
  """Time MLP plus a label embedding (null class = num_classes)."""
  dim: int
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, t_B, label_B=None):
    e = timestep_embedding(t_B, self.dim)
    e = nn.Dense(4 * self.dim, dtype=self.dtype)(e)
    e = nn.Dense(4 * self.dim, dtype=self.dtype)(nn.swish(e))
    if self.num_classes:
      e = e + nn.Embed(self.num_classes + 1, 4 * self.dim, dtype=self.dtype,
                       name='label_embed')(label_B)
    return e


def _groups(ch):
  return math.gcd(ch, 8)


class ResBlock(nn.Module):
  channels: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, emb, train):
    d = self.dtype
    h = nn.swish(nn.GroupNorm(_groups(x.shape[-1]), dtype=d)(x))
    h = nn.Conv(self.channels, (3, 3), dtype=d)(h)
    h = h + nn.Dense(self.channels, dtype=d)(nn.swish(emb))[:, None, None]
    h = nn.swish(nn.GroupNorm(_groups(self.channels), dtype=d)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.Conv(self.channels, (3, 3), kernel_init=nn.initializers.zeros, dtype=d)(h)
    if x.shape[-1] != self.channels:
      x = nn.Conv(self.channels, (1, 1), dtype=d, name='skip')(x)
    return x + h


class SelfAttention2d(nn.Module):
  num_heads: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC):
    B, H, W, C = x_BxHxWxC.shape
    h = nn.GroupNorm(_groups(C), dtype=self.dtype)(x_BxHxWxC).reshape(B, H * W, C)
    h = nn.MultiHeadDotProductAttention(self.num_heads, out_kernel_init=nn.initializers.zeros,
                                        dtype=self.dtype, force_fp32_for_softmax=True)(h)
    return x_BxHxWxC + h.reshape(B, H, W, C)


class UNet(nn.Module):
  """DDPM's U-Net: residual blocks, skip connections between resolutions,
  self-attention at the resolutions in `attn_resolutions`."""
  channels: int = 64
  channel_mult: Sequence[int] = (1, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (4,)
  dropout: float = 0.0
  num_classes: int = 0
  out_levels: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BxHxWxC, t_B, label_B=None, train=False):
    C, d = z_BxHxWxC.shape[-1], self.dtype
    emb = Conditioning(self.channels, self.num_classes, d)(t_B, label_B)
    h = nn.Conv(self.channels, (3, 3), dtype=d)(z_BxHxWxC)
    skips = [h]
    for level, mult in enumerate(self.channel_mult):
      for _ in range(self.num_res_blocks):
        h = ResBlock(self.channels * mult, self.dropout, d)(h, emb, train)
        if h.shape[1] in self.attn_resolutions:
          h = SelfAttention2d(dtype=d)(h)
        skips.append(h)
      if level < len(self.channel_mult) - 1:
        h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), dtype=d)(h)
        skips.append(h)
    h = ResBlock(h.shape[-1], self.dropout, d)(h, emb, train)
    h = SelfAttention2d(dtype=d)(h)
    h = ResBlock(h.shape[-1], self.dropout, d)(h, emb, train)
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = ResBlock(self.channels * mult, self.dropout, d)(h, emb, train)
        if h.shape[1] in self.attn_resolutions:
          h = SelfAttention2d(dtype=d)(h)
      if level > 0:
        B, H, W, D = h.shape
        h = jnp.repeat(jnp.repeat(h, 2, 1), 2, 2)
        h = nn.Conv(D, (3, 3), dtype=d)(h)
    h = nn.swish(nn.GroupNorm(_groups(h.shape[-1]), dtype=d)(h))
    return _head(h, C, self.out_levels,
                 lambda n: nn.Conv(n, (3, 3), kernel_init=nn.initializers.zeros, dtype=d))


def _head(h, C, out_levels, layer):
  out = layer(C * max(out_levels, 1))(h).astype(jnp.float32)
  return out.reshape(out.shape[:-1] + (C, out_levels)) if out_levels else out


class DiT(nn.Module):
  """A transformer over p x p patches (DiT-style) with the shared
  non-causal blocks; the conditioning enters as an extra token."""
  patch: int = 2
  width: int = 128
  num_layers: int = 4
  num_heads: int = 4
  mlp_ratio: int = 4
  dropout: float = 0.0
  num_classes: int = 0
  out_levels: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BxHxWxC, t_B, label_B=None, train=False):
    B, H, W, C = z_BxHxWxC.shape
    p, d = self.patch, self.dtype
    if H % p or W % p:
      raise ConfigError(f'model.patch={p} does not divide the {H}x{W} image')
    n = (H // p) * (W // p)
    x = z_BxHxWxC.reshape(B, H // p, p, W // p, p, C).transpose(0, 1, 3, 2, 4, 5)
    x = nn.Dense(self.width, dtype=d)(x.reshape(B, n, p * p * C))
    x = x + self.param('pos_embed', nn.initializers.normal(0.02), (n, self.width)).astype(d)
    cond = nn.Dense(self.width, dtype=d)(
        Conditioning(self.width // 4, self.num_classes, d)(t_B, label_B))
    x = jnp.concatenate([cond[:, None], x], axis=1)
    positions = jnp.broadcast_to(jnp.arange(n + 1), (B, n + 1))
    for i in range(self.num_layers):
      x, _ = Block(self.num_heads, self.mlp_ratio, rotary=False, dropout=self.dropout,
                   dtype=d, causal=False, name=f'block_{i}')(x, positions, train=train)
    x = nn.LayerNorm(dtype=d)(x[:, 1:])
    levels = max(self.out_levels, 1)
    x = nn.Dense(p * p * C * levels, kernel_init=nn.initializers.zeros, dtype=d)(x)
    x = x.astype(jnp.float32)
    x = x.reshape(B, H // p, W // p, p, p, C * levels).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(B, H, W, C * levels)
    return x.reshape(B, H, W, C, levels) if self.out_levels else x


class MLP(nn.Module):
  """Residual MLP denoiser for points (B, D)."""
  width: int = 256
  num_layers: int = 3
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BxD, t_B, label_B=None, train=False):
    del train
    d = self.dtype
    emb = Conditioning(self.width // 4, self.num_classes, d)(t_B, label_B)
    h = nn.Dense(self.width, dtype=d)(z_BxD)
    for _ in range(self.num_layers):
      r = nn.swish(nn.LayerNorm(dtype=d)(h))
      r = nn.Dense(self.width, dtype=d)(r) + nn.Dense(self.width, dtype=d)(emb)
      r = nn.Dense(self.width, dtype=d)(nn.swish(r))
      h = h + r
    out = nn.Dense(z_BxD.shape[-1], kernel_init=nn.initializers.zeros, dtype=d)(
        nn.swish(nn.LayerNorm(dtype=d)(h)))
    return out.astype(jnp.float32)


def lattice_x0(logits_BxHxWxCxL, z, alpha, sigma):
  """x0_hat as the mean of a per-pixel posterior over the L grey levels
  -1 + 2k/(L-1): logits = network + log N(z; alpha level_k, sigma^2). The
  Gaussian term makes the posterior exact wherever the noise is small (it
  rounds to the nearest level), so the network only models the prior over
  levels given the context. alpha, sigma broadcast against z."""
  L = logits_BxHxWxCxL.shape[-1]
  levels = jnp.linspace(-1.0, 1.0, L)
  log_lik = -0.5 * jnp.square((z[..., None] - alpha[..., None] * levels) / sigma[..., None])
  probs = nn.softmax(logits_BxHxWxCxL.astype(jnp.float32) + log_lik, axis=-1)
  return (probs * levels).sum(-1)
