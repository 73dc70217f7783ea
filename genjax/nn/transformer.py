"""Decoder-only transformer with an explicit, functional KV cache.

The cache is a pytree passed in and returned (no mutable Flax collection), so
decoding is a pure function that `lax.scan` can loop over.
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.errors import ConfigError

Dtype = Any


def rotary(x_BxTxHxD, positions_BxT, base=10000.0):
  """Rotates feature pairs of `x` by angles proportional to the position."""
  half = x_BxTxHxD.shape[-1] // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions_BxT[..., None, None].astype(jnp.float32) * freqs  # BxTx1xD/2
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  x1, x2 = jnp.split(x_BxTxHxD.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.astype(x_BxTxHxD.dtype)


def init_cache(batch_size, max_len, num_layers, num_heads, head_dim, dtype=jnp.float32):
  """Empty KV cache: one (k, v) pair of BxLxHxD arrays per layer."""
  shape = (batch_size, max_len, num_heads, head_dim)
  return [dict(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype)) for _ in range(num_layers)]


class CausalSelfAttention(nn.Module):
  num_heads: int
  rotary: bool = True
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  causal: bool = True  # False: every position attends to all (a DiT over patches)

  @nn.compact
  def __call__(self, x_BxTxC, positions_BxT, cache=None, index=None, train=False, mask_TxS=None):
    B, T, C = x_BxTxC.shape
    H, D = self.num_heads, C // self.num_heads
    qkv = nn.DenseGeneral((3, H, D), dtype=self.dtype, name='qkv')(x_BxTxC)  # BxTx3xHxD
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if self.rotary:
      q, k = rotary(q, positions_BxT), rotary(k, positions_BxT)

    if cache is None:
      keys, values = k, v
      key_pos_S = jnp.arange(T)
      query_pos_T = jnp.arange(T)
      new_cache = None
    else:
      # Write this chunk at `index`, then attend over the whole cache.
      keys = jax.lax.dynamic_update_slice(cache['k'], k.astype(cache['k'].dtype), (0, index, 0, 0))
      values = jax.lax.dynamic_update_slice(cache['v'], v.astype(cache['v'].dtype), (0, index, 0, 0))
      new_cache = dict(k=keys, v=values)
      key_pos_S = jnp.arange(keys.shape[1])
      query_pos_T = index + jnp.arange(T)

    if mask_TxS is None:  # else the caller's mask (without a cache): query t sees key s where True
      mask_TxS = key_pos_S[None, :] <= query_pos_T[:, None]
      if not self.causal:
        mask_TxS = jnp.ones_like(mask_TxS)
    scores = jnp.einsum('bthd,bshd->bhts', q, keys.astype(q.dtype)).astype(jnp.float32)
    scores = scores / jnp.sqrt(D).astype(jnp.float32)
    scores = jnp.where(mask_TxS, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = nn.Dropout(self.dropout, deterministic=not train)(probs)
    out = jnp.einsum('bhts,bshd->bthd', probs.astype(self.dtype), values.astype(self.dtype))
    out = nn.DenseGeneral(C, axis=(-2, -1), dtype=self.dtype, name='out')(out)
    return out, new_cache


class Block(nn.Module):
  num_heads: int
  mlp_ratio: int = 4
  rotary: bool = True
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  causal: bool = True

  @nn.compact
  def __call__(self, x_BxTxC, positions_BxT, cache=None, index=None, train=False, mask_TxS=None):
    C = x_BxTxC.shape[-1]
    h = nn.LayerNorm(dtype=self.dtype, name='ln_attn')(x_BxTxC)
    h, new_cache = CausalSelfAttention(self.num_heads, self.rotary, self.dropout, self.dtype,
                                       self.causal, name='attn')(h, positions_BxT, cache, index, train,
                                                                 mask_TxS)
    x_BxTxC = x_BxTxC + nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.LayerNorm(dtype=self.dtype, name='ln_mlp')(x_BxTxC)
    h = nn.Dense(self.mlp_ratio * C, dtype=self.dtype, name='fc')(h)
    h = nn.gelu(h)
    h = nn.Dense(C, dtype=self.dtype, name='proj')(h)
    x_BxTxC = x_BxTxC + nn.Dropout(self.dropout, deterministic=not train)(h)
    return x_BxTxC, new_cache


class Transformer(nn.Module):
  """Pre-LayerNorm causal LM with tied input/output embeddings.

  `__call__(tokens, cache=None, index=None)` returns `(logits_BxTxV, cache)`.
  Without a cache it is the training forward pass over positions 0..T-1; with
  one it processes positions index..index+T-1 and returns the updated cache.
  Without a cache, `positions_T` (each token's position) and `mask_TxS` (which
  keys each query sees) may replace the defaults: 0..T-1 and causal (or all).
  """
  vocab_size: int
  max_len: int
  num_layers: int
  num_heads: int
  width: int
  mlp_ratio: int = 4
  positions: str = 'rotary'  # or 'learned'
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  causal: bool = True  # False: a bidirectional encoder (the masked-diffusion denoiser)
  # Recompute each block's activations in the backward pass: attention over long
  # sequences (3,072 pixels) saves T x T probabilities per head and layer otherwise.
  remat: bool = False

  def setup(self):
    if self.positions not in ('rotary', 'learned'):
      raise ConfigError(f"model.positions must be 'rotary' or 'learned', got {self.positions!r}")
    if self.width % self.num_heads:
      raise ConfigError(f'model.width={self.width} is not divisible by model.num_heads={self.num_heads}')
    self.embed = nn.Embed(self.vocab_size, self.width,
                          embedding_init=nn.initializers.normal(0.02), name='embed')
    if self.positions == 'learned':
      self.pos_embed = self.param('pos_embed', nn.initializers.normal(0.02), (self.max_len, self.width))
    block = nn.remat(Block, static_argnums=(5,)) if self.remat else Block  # 5: `train`
    self.blocks = [block(self.num_heads, self.mlp_ratio, self.positions == 'rotary', self.dropout,
                         self.dtype, self.causal, name=f'block_{i}') for i in range(self.num_layers)]
    self.ln_final = nn.LayerNorm(dtype=self.dtype, name='ln_final')
    self.drop = nn.Dropout(self.dropout)

  def __call__(self, tokens_BxT, cache=None, index=None, train=False, positions_T=None,
               mask_TxS=None):
    B, T = tokens_BxT.shape
    start = 0 if index is None else index
    if positions_T is None:
      positions_T = start + jnp.arange(T)
    positions_BxT = jnp.broadcast_to(positions_T, (B, T))
    x = self.embed(tokens_BxT).astype(self.dtype)
    if self.positions == 'learned':
      x = x + jnp.take(self.pos_embed, positions_T, axis=0).astype(self.dtype)
    x = self.drop(x, deterministic=not train)
    new_cache = []
    for i, block in enumerate(self.blocks):
      x, layer_cache = block(x, positions_BxT, None if cache is None else cache[i], index, train,
                             mask_TxS)
      new_cache.append(layer_cache)
    x = self.ln_final(x)
    logits_BxTxV = self.embed.attend(x.astype(jnp.float32))
    return logits_BxTxV, (None if cache is None else new_cache)

  def init_cache(self, batch_size, dtype=jnp.float32):
    return init_cache(batch_size, self.max_len, self.num_layers, self.num_heads,
                      self.width // self.num_heads, dtype)
