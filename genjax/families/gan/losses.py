"""GAN objectives on discriminator outputs, and the gradient penalties.

With l = D(x) a logit (critic value for 'wgan_gp'), sigma the logistic function:

  minimax (Goodfellow et al. 2014), saturating:
    d = -log sigma(l_real) - log(1 - sigma(l_fake)),   g = log(1 - sigma(l_fake))
  nonsaturating (same paper, the G loss used in practice):
    d = as minimax,                                    g = -log sigma(l_fake)
  hinge (Lim & Ye 2017; Miyato et al. 2018):
    d = relu(1 - l_real) + relu(1 + l_fake),           g = -l_fake
  wgan_gp (Gulrajani et al. 2017): d = l_fake - l_real (+ the gradient penalty), g = -l_fake

Every loss is a mean over the batch, in float32.
"""
import jax
import jax.numpy as jnp

from genjax.errors import ConfigError

LOSSES = ('minimax', 'nonsaturating', 'hinge', 'wgan_gp')


def _check(kind):
  if kind not in LOSSES:
    raise ConfigError(f'gan.loss must be one of {LOSSES}, got {kind!r}')


def d_loss(kind, real_B, fake_B):
  _check(kind)
  real_B, fake_B = real_B.astype(jnp.float32), fake_B.astype(jnp.float32)
  if kind in ('minimax', 'nonsaturating'):
    # -log sigma(l) = softplus(-l); -log(1 - sigma(l)) = softplus(l)
    return jnp.mean(jax.nn.softplus(-real_B)) + jnp.mean(jax.nn.softplus(fake_B))
  if kind == 'hinge':
    return jnp.mean(jax.nn.relu(1.0 - real_B)) + jnp.mean(jax.nn.relu(1.0 + fake_B))
  return jnp.mean(fake_B) - jnp.mean(real_B)


def g_loss(kind, fake_B):
  _check(kind)
  fake_B = fake_B.astype(jnp.float32)
  if kind == 'minimax':
    return -jnp.mean(jax.nn.softplus(fake_B))  # log(1 - sigma(l)) = -softplus(l)
  if kind == 'nonsaturating':
    return jnp.mean(jax.nn.softplus(-fake_B))
  return -jnp.mean(fake_B)


def _input_grads(d_fn, x):
  """d D(x_i) / d x_i for each example (D scores examples independently)."""
  return jax.grad(lambda x: jnp.sum(d_fn(x)))(x)


def gradient_penalty(d_fn, real, fake, eps_B):
  """WGAN-GP: mean over the batch of (||grad D(x_hat)|| - 1)^2, at
  x_hat = eps * real + (1 - eps) * fake."""
  eps = eps_B.reshape((-1,) + (1,) * (real.ndim - 1))
  x_hat = eps * real + (1.0 - eps) * fake
  g = _input_grads(d_fn, x_hat).reshape(real.shape[0], -1).astype(jnp.float32)
  # sqrt of (sum + tiny) keeps the gradient finite where the norm is 0.
  norm_B = jnp.sqrt(jnp.sum(g ** 2, axis=1) + 1e-12)
  return jnp.mean((norm_B - 1.0) ** 2)


def r1_penalty(d_fn, real):
  """R1 (Mescheder et al. 2018): mean over real examples of ||grad D(x)||^2;
  the loss adds r1_weight / 2 times it."""
  g = _input_grads(d_fn, real).reshape(real.shape[0], -1).astype(jnp.float32)
  return jnp.mean(jnp.sum(g ** 2, axis=1))
