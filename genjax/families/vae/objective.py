"""The VAE's training objective, a pure function of the model, its parameters
and the batch: the (beta-weighted) ELBO, or the IWAE bound with train_k samples."""
import jax
import jax.numpy as jnp

from genjax.families import base
from genjax.families.vae.model import decoder_logprob, draw_eps, gaussian_kl, log_weights


def per_example_loss(model, params, x, rng, beta, train_k):
  """(loss, recon, kl), each (B,), in nats per example.

  train_k = 1: loss = recon + beta * KL, recon = -log p(x|z) at one draw
  z ~ q(z|x) and the KL in closed form (`gaussian_kl`). train_k > 1: loss =
  -log (1/K) sum_k w_k, the IWAE bound, where beta scales log p(z) - log q(z|x)
  inside each log w_k; recon is then the mean of -log p(x|z_k) over the K draws.
  `rng` is the step's key: example i's noise comes from its index in the
  global batch (`base.example_keys`), dropout from this device's key.
  """
  B = x.shape[0]
  drop_rng = base.device_key(jax.random.fold_in(rng, 1))
  mean, logvar = model.apply({'params': params}, x, True, method=model.encode,
                             rngs={'dropout': jax.random.fold_in(drop_rng, 0)})
  eps = draw_eps(base.example_keys(rng, B), 0, train_k, model.latent_dim)
  kl = gaussian_kl(mean, logvar)
  if train_k == 1:
    z = mean + jnp.exp(0.5 * logvar) * eps[0]
    out = model.apply({'params': params}, z, True, method=model.decode,
                      rngs={'dropout': jax.random.fold_in(drop_rng, 1)})
    recon = -decoder_logprob(model.likelihood, out, x, model.num_levels)
    return recon + beta * kl, recon, kl
  lw, logpx = log_weights(model, params, x, mean, logvar, eps, train=True,
                          rng=jax.random.fold_in(drop_rng, 1))
  lw = logpx + beta * (lw - logpx)  # scales log p(z) - log q(z|x)
  loss = -(jax.nn.logsumexp(lw, axis=0) - jnp.log(train_k))
  return loss, -logpx.mean(0), kl
