"""Generators and discriminators: MLPs for points, DCGAN-style convnets for images.

Generators map z (B, latent) to data in [-1, 1] (images, tanh) or R^D (points,
linear). Discriminators return one logit (or critic value) per input, (B,).

Packing (PacGAN, Lin et al. 2018): the discriminator judges `pack` samples at
once, concatenated (points: features; images: channels), so a generator that
puts several samples on one mode is visibly less diverse than real data.
Conditioning: labels are one-hot inputs of the generator; the discriminator
is a projection discriminator (Miyato & Koyama 2018): logit = psi(h) + <embed(y), h>.
`dtype` is the computation's (bfloat16 for mixed precision); parameters stay
float32 and every network's output is float32.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from genjax.errors import ConfigError
from genjax.families import base


def _act(name):
  return {'relu': nn.relu, 'leaky_relu': lambda x: nn.leaky_relu(x, 0.2), 'elu': nn.elu}[name]


class MLPGenerator(nn.Module):
  out_dim: int
  width: int = 256
  depth: int = 3
  num_classes: int = 0  # > 0: conditional on labels
  act: str = 'relu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BxZ, label_B=None):
    h = _with_label(z_BxZ, label_B, self.num_classes)
    for _ in range(self.depth):
      h = _act(self.act)(nn.Dense(self.width, dtype=self.dtype)(h))
    return nn.Dense(self.out_dim, dtype=self.dtype)(h).astype(jnp.float32)


class MLPDiscriminator(nn.Module):
  width: int = 256
  depth: int = 3
  num_classes: int = 0
  act: str = 'leaky_relu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxD, label_B=None):
    h = x_BxD
    for _ in range(self.depth):
      h = _act(self.act)(nn.Dense(self.width, dtype=self.dtype)(h))
    return _head(h, label_B, self.num_classes, self.dtype)


def num_upsamplings(size):
  """Stride-2 stages between a >= 2x2 seed and `size` (8 -> 2, 28 -> 2, 32 -> 3)."""
  k = 0
  while k < 3 and size % 2 ** (k + 1) == 0 and size // 2 ** (k + 1) >= 2:
    k += 1
  return k


class DCGenerator(nn.Module):
  """Dense to a (H/2^k, W/2^k, width * 2^(k-1)) seed, k stride-2 transposed
  convs halving the channels, then a 3x3 conv to C channels and tanh."""
  shape: tuple  # (H, W, C) of one image
  width: int = 64
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_BxZ, label_B=None):
    H, W, C = self.shape
    d = self.dtype
    k = num_upsamplings(min(H, W))
    h = _with_label(z_BxZ, label_B, self.num_classes)
    ch = self.width * 2 ** max(k - 1, 0)
    h = nn.relu(nn.Dense((H >> k) * (W >> k) * ch, dtype=d)(h))
    h = h.reshape(h.shape[0], H >> k, W >> k, ch)
    for i in range(k):
      ch = max((self.width << k) >> (i + 2), 1)  # k=2: 2w -> w -> w/2
      h = nn.relu(nn.ConvTranspose(ch, (4, 4), strides=(2, 2), padding='SAME', dtype=d)(h))
    return jnp.tanh(nn.Conv(C, (3, 3), padding='SAME', dtype=d)(h).astype(jnp.float32))


class Stride2Conv(nn.Module):
  """`nn.Conv(features, (4, 4), strides=(2, 2), padding='SAME')`: the same
  parameters, the same function and multiply-adds, computed as one matmul of
  the input's 4x4 patches (cut by strided slices) with the kernel. XLA's CPU
  backend computes a convolution's kernel gradient, where the batch is the
  contracted dimension, on a slow path, and the R1 penalty differentiates it
  twice; a matmul's gradients are matmuls."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC):
    _, H, W, C = x_BxHxWxC.shape
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (4, 4, C, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    x_BxHxWxC, kernel, bias = (a.astype(self.dtype) for a in (x_BxHxWxC, kernel, bias))
    out, pads = [], []
    for size in (H, W):  # lax's SAME padding
      n = -(-size // 2)
      total = max((n - 1) * 2 + 4 - size, 0)
      out.append(n)
      pads.append((total // 2, total - total // 2))
    x = jnp.pad(x_BxHxWxC, ((0, 0), *pads, (0, 0)))
    Ho, Wo = out
    patches = jnp.stack([x[:, u:u + 2 * Ho - 1:2, v:v + 2 * Wo - 1:2, :]
                         for u in range(4) for v in range(4)], axis=3)  # (B, Ho, Wo, 16, C)
    return jnp.einsum('bhwkc,kcf->bhwf', patches, kernel.reshape(16, C, self.features)) + bias


class DCDiscriminator(nn.Module):
  """3x3 conv, then k stride-2 4x4 convs doubling the channels, leaky ReLU,
  no normalisation (so that gradient penalties see per-example gradients)."""
  width: int = 64
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC, label_B=None):
    d = self.dtype
    k = num_upsamplings(min(x_BxHxWxC.shape[1:3]))
    h = nn.leaky_relu(nn.Conv(self.width // 2, (3, 3), padding='SAME', dtype=d)(x_BxHxWxC), 0.2)
    for i in range(k):
      h = nn.leaky_relu(Stride2Conv(self.width * 2 ** i, d, name=f'Conv_{i + 1}')(h), 0.2)
    h = h.reshape(h.shape[0], -1)
    return _head(h, label_B, self.num_classes, d)


def _with_label(z, label, num_classes):
  if not num_classes:
    return z
  return jnp.concatenate([z, nn.one_hot(label, num_classes, dtype=z.dtype)], axis=-1)


def _head(h_BxF, label_B, num_classes, dtype=jnp.float32):
  logit_B = nn.Dense(1, dtype=dtype)(h_BxF)[:, 0].astype(jnp.float32)
  if num_classes:
    embed_BxF = nn.Embed(num_classes, h_BxF.shape[-1], dtype=dtype)(label_B)
    logit_B = logit_B + jnp.sum((embed_BxF * h_BxF).astype(jnp.float32), axis=-1)
  return logit_B


def pack(x_BxD, k):
  """Groups k consecutive samples into one discriminator input: points
  (B, D) -> (B/k, k*D); images (B, H, W, C) -> (B/k, H, W, k*C)."""
  if k == 1:
    return x_BxD
  B = x_BxD.shape[0]
  if x_BxD.ndim == 2:
    return x_BxD.reshape(B // k, -1)
  _, H, W, C = x_BxD.shape
  return x_BxD.reshape(B // k, k, H, W, C).transpose(0, 2, 3, 1, 4).reshape(B // k, H, W, k * C)


def make(config, info):
  """(generator, discriminator, data shape) for the dataset's modality."""
  m = config.model
  classes = info.num_classes if m.conditional else 0
  dtype = base.compute_dtype(m)
  if m.conditional and m.pack > 1:
    raise ConfigError('model.conditional with model.pack > 1 is not supported: a projection '
                     'discriminator scores one labelled sample; set model.pack=1')
  if m.conditional and not info.num_classes:
    raise ConfigError(f'model.conditional needs a labelled dataset; {info.name!r} has no classes')
  if info.modality == 'points':
    g = MLPGenerator(out_dim=info.shape[0], width=m.g_width, depth=m.g_depth, num_classes=classes,
                     dtype=dtype)
    d = MLPDiscriminator(width=m.d_width, depth=m.d_depth, num_classes=classes, dtype=dtype)
  else:  # images
    g = DCGenerator(shape=tuple(info.shape), width=m.g_width, num_classes=classes, dtype=dtype)
    d = DCDiscriminator(width=m.d_width, num_classes=classes, dtype=dtype)
  return g, d
