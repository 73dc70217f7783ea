"""The velocity network (diffusion's U-Net, DiT or MLP, reused as they are),
classifier-free guidance on velocities, and the maps between data and model
space with their log-Jacobians.

Images: dequantised values v = x + u in [0, L)^D (u ~ U[0, 1)^D, L levels) go
to y = 2 v / L - 1 in [-1, 1), so log p(v) = log p_y(y) + D log(2 / L).
Points: y = x / point_scale, log p(x) = log p_y(y) - D log(point_scale).
"""
import jax
import jax.numpy as jnp
import numpy as np

from genjax.errors import ConfigError
from genjax.families import base
from genjax.families.diffusion import networks

# The networks embed time as a float step of a 1000-step chain; t in [0, 1] is
# scaled up so that the sinusoidal embedding resolves it as finely.
TIME_SCALE = 1000.0


def make_network(m, info):
  num_classes = info.num_classes if m.conditional else 0
  dtype = base.compute_dtype(m)
  if m.net == 'unet':
    return networks.UNet(m.channels, tuple(m.channel_mult), m.num_res_blocks,
                         tuple(m.attn_resolutions), m.dropout, num_classes, dtype=dtype)
  if m.net == 'dit':
    return networks.DiT(m.patch, m.width, m.num_layers, m.num_heads, m.mlp_ratio, m.dropout,
                        num_classes, dtype=dtype)
  if m.net == 'mlp':
    return networks.MLP(m.width, m.num_layers, num_classes, dtype=dtype)
  raise ConfigError(f"model.net must be 'unet', 'dit' or 'mlp', got {m.net!r}")


def velocity(net, params, x, t_B, label_B=None, train=False, rng=None):
  """v(x, t) (shaped like x) at times t_B (B,) in [0, 1]."""
  out = net.apply({'params': params}, x, t_B.astype(jnp.float32) * TIME_SCALE, label_B,
                  train=train, rngs={'dropout': rng} if train else {})
  return out.astype(jnp.float32)


def guided(net, params, label_N, scale, null):
  """`field(x, t)` (t a scalar) for classifier-free guidance, v = v_u + scale
  (v_c - v_u): scale 0 is the unconditional model, 1 the conditional one.
  Returns (field, network passes per evaluation)."""
  def at(label):
    return lambda x, t: velocity(net, params, x, jnp.full((x.shape[0],), t), label)

  if not net.num_classes or label_N is None:
    return at(None), 1
  null_N = jnp.full_like(label_N, null)
  if scale in (0, 1):
    return at(null_N if scale == 0 else label_N), 1
  cond, uncond = at(label_N), at(null_N)

  def field(x, t):
    v_u = uncond(x, t)
    return v_u + scale * (cond(x, t) - v_u)

  return field, 2


def dequantise(x, keys, salt):
  """Images x (integers) plus U[0, 1)^D noise, example i's from keys[i]."""
  u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, salt), x.shape[1:]))(keys)
  return x.astype(jnp.float32) + u


def to_model_space(batch, info, point_scale, keys, salt=3):
  """(y, log|dy/dx| per example): dequantised images in [-1, 1), or points."""
  if info.modality == 'image':
    L = info.num_levels
    y = dequantise(batch['image'], keys, salt) * (2.0 / L) - 1.0
    return y, y[0].size * float(np.log(2.0 / L))
  y = batch['x'].astype(jnp.float32) / point_scale
  return y, -y[0].size * float(np.log(point_scale))


def to_output(y, info, point_scale):
  """Model space back to data: the grey level whose bin y falls in, or points."""
  y = np.asarray(y)
  if info.modality == 'image':
    L = info.num_levels
    return np.clip(np.floor((y + 1.0) * 0.5 * L), 0, L - 1).astype(np.uint8)
  return y * point_scale
