"""The flow's density by change of variables, as pure functions of the model
and its parameters: log p(x) = log N(z; 0, I) + log|det dz/dx|, z = f(x).

Images are modelled as dequantised values v = x + u in [0, L)^D (L =
num_levels, u ~ U[0, 1)^D), which the flow sees as y = v / L; the density of v
is p_y(v / L) / L^D. Points (num_levels 0) go into the flow as they are.
"""
import jax
import jax.numpy as jnp
import numpy as np

from genjax.families import base

LOG_2PI = float(np.log(2 * np.pi))


def std_normal_logpdf(z_BxD):
  return -0.5 * (jnp.sum(z_BxD ** 2, -1) + z_BxD.shape[-1] * LOG_2PI)


def log_density(model, params, v, num_levels=0):
  """(B,) log p(v) of data-space points v (images: dequantised values in [0, L))."""
  y = v / num_levels if num_levels else v
  z, log_det = model.apply({'params': params}, y, method=model.forward)
  # log of the bin width: p_v(v) = p_y(v / L) / L^D.
  log_bin = int(np.prod(v.shape[1:])) * float(np.log(num_levels)) if num_levels else 0.0
  return std_normal_logpdf(z) + log_det - log_bin


def dequantise(batch, rng, num_levels=0):
  """Images plus uniform noise in [0, 1) per pixel (one key per example, by its
  index in the global batch, so the noise does not depend on how the batch is
  split over devices); points as they are."""
  if not num_levels:
    return batch['x'].astype(jnp.float32)
  x = batch['image'].astype(jnp.float32)
  keys = base.example_keys(rng, x.shape[0])
  return x + jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:]))(keys)


def nll(model, params, batch, rng, num_levels=0):
  """(B,) NLL in nats: exact for points; for images -log p(x + u) at the noise u
  that `rng` draws, whose mean over u bounds -log P(x) from above (Jensen)."""
  return -log_density(model, params, dequantise(batch, rng, num_levels), num_levels)
