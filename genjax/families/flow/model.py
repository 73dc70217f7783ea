"""Flows built from the layers: a multi-scale image flow (RealNVP / Glow) and
a vector flow. Both map x -> (z (B, D) flat, log_det (B,)) with `forward` and
back with `inverse`; the base is a standard normal on z.
"""
import functools
from typing import Any, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from genjax.families.flow import layers


class Sequence(nn.Module):
  """Layers applied in order; log-dets add up."""
  layers: Tuple[nn.Module, ...]

  def forward(self, x):
    log_det = jnp.zeros((x.shape[0],), jnp.float32)
    for layer in self.layers:
      x, ld = layer.forward(x)
      log_det = log_det + ld
    return x, log_det

  def inverse(self, z):
    for layer in reversed(self.layers):
      z = layer.inverse(z)
    return z


def glow_step(i, net, parity):
  return [layers.ActNorm(), layers.InvertibleLinear(seed=i),
          layers.AffineCoupling('channel', parity, net)]


class ImageFlow(nn.Module):
  """Multi-scale flow on (H, W, C) images with values in [0, 1].

  Logit preprocessing (alpha > 0), then `checkerboard_steps` ActNorm +
  checkerboard couplings at full resolution; then each of `levels` levels
  squeezes, runs `steps` Glow steps (ActNorm, LU 1x1 conv, channel coupling)
  and, except the last, factors out half of its channels to z (RealNVP's
  multi-scale architecture).
  """
  shape: Tuple[int, int, int]
  levels: int = 2
  steps: int = 4
  checkerboard_steps: int = 2
  hidden: int = 64
  num_blocks: int = 1
  alpha: float = 0.05
  dtype: Any = jnp.float32  # the conditioners' computation

  def setup(self):
    net = functools.partial(layers.ConvNet, hidden=self.hidden, num_blocks=self.num_blocks,
                            dtype=self.dtype)
    first = [layers.Logit(self.alpha)] if self.alpha > 0 else []
    for k in range(self.checkerboard_steps):
      first += [layers.ActNorm(), layers.AffineCoupling('checkerboard', k % 2, net)]
    self.pre = Sequence(tuple(first))
    self.scales = [Sequence(tuple([layers.Squeeze()] + [
        layer for k in range(self.steps) for layer in glow_step(100 * l + k, net, k % 2)]))
                   for l in range(self.levels)]

  def _out_shapes(self):
    """Shapes of the z parts, in order: each level's factored-out half, then the rest."""
    H, W, C = self.shape
    shapes = []
    for l in range(self.levels):
      H, W, C = H // 2, W // 2, 4 * C
      if l < self.levels - 1:
        shapes.append((H, W, C // 2))
        C -= C // 2
    return shapes + [(H, W, C)]

  def forward(self, x):
    h, log_det = self.pre.forward(x)
    parts = []
    for l, scale in enumerate(self.scales):
      h, ld = scale.forward(h)
      log_det = log_det + ld
      if l < self.levels - 1:
        k = h.shape[-1] // 2
        parts.append(h[..., :k])
        h = h[..., k:]
    parts.append(h)
    return jnp.concatenate([p.reshape(p.shape[0], -1) for p in parts], -1), log_det

  def inverse(self, z):
    shapes = self._out_shapes()
    sizes = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]
    parts = [p.reshape((z.shape[0],) + s) for p, s in zip(jnp.split(z, sizes, -1), shapes)]
    h = parts[-1]
    for l in reversed(range(self.levels)):
      if l < self.levels - 1:
        h = jnp.concatenate([parts[l], h], -1)
      h = self.scales[l].inverse(h)
    return self.pre.inverse(h)


class VectorFlow(nn.Module):
  """RealNVP on vectors: `steps` x (ActNorm, half-split coupling with an MLP,
  fixed permutation)."""
  steps: int = 8
  hidden: int = 128
  depth: int = 2
  permutation: str = 'reverse'
  dtype: Any = jnp.float32  # the conditioners' computation

  def setup(self):
    net = functools.partial(layers.MLP, hidden=self.hidden, depth=self.depth, dtype=self.dtype)
    self.flow = Sequence(tuple(
        layer for k in range(self.steps) for layer in (
            layers.ActNorm(), layers.AffineCoupling('channel', 0, net),
            layers.Permutation(self.permutation, seed=k))))

  def forward(self, x):
    return self.flow.forward(x)

  def inverse(self, z):
    return self.flow.inverse(z)
