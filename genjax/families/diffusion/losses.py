"""Diffusion's training losses and its variational bound, as pure functions.

Each takes the denoiser `apply(params, z, t_N, label_N, train=False, rng=None)
-> (x0_hat, eps_hat)` (`predict` with its network, schedule and target bound),
the `schedules.Schedule`, and, for the bound's diffusion term, `proposal`: the
(T+1,) probabilities of t that `schedules.log_snr_proposal` gives. Per-example
noise comes from `keys` (one per example, by its index in the global batch;
`base.example_keys`), so a batch split over devices draws what one device would.
"""
import jax
import jax.numpy as jnp
import numpy as np

from genjax.errors import ConfigError
from genjax.families import base
from genjax.families.diffusion import networks, schedules

LOSSES = ('eps_mse', 'vlb', 'hybrid')


def predict(net, sched, target, params, z, t_N, label_N, train=False, rng=None):
  """(x0_hat, eps_hat) at steps t_N: `net`'s output read as `target` ('eps',
  'x0', 'v', or 'lattice': per-level logits, `networks.lattice_x0`)."""
  alpha, sigma = sched.alpha_sigma(t_N)
  return predict_at(net, target, params, z, t_N, alpha, sigma, label_N, train, rng)


def predict_at(net, target, params, z, t_N, alpha_N, sigma_N, label_N, train=False, rng=None):
  """`predict` at float steps t_N whose alpha, sigma (N,) the caller gives:
  between the chain's steps too (the probability-flow ODE)."""
  alpha, sigma = schedules._bcast(alpha_N, z), schedules._bcast(sigma_N, z)  # pylint: disable=protected-access
  out = net.apply({'params': params}, z, t_N.astype(jnp.float32), label_N, train=train,
                  rngs={'dropout': rng} if train else {})
  if target == 'lattice':
    out = networks.lattice_x0(out, z, alpha, sigma)
  return schedules.predictions(target, out, z, alpha, sigma)


def example_normals(keys, salt, shape):
  """(B,) + shape standard normals, example i's from keys[i] folded with `salt`."""
  return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, salt), shape))(keys)


def eps_error(apply, sched, params, x0, t_B, eps, label, rng=None, train=False):
  """||eps - eps_hat||^2 (B,) at x_t = q_sample(x0, t_B, eps)."""
  z = schedules.q_sample(sched, x0, t_B, eps)
  _, eps_hat = apply(params, z, t_B, label, train, rng)
  return jnp.square(eps - eps_hat).reshape(x0.shape[0], -1).sum(-1)


def diffusion_term(apply, sched, proposal, params, x0, u_B, eps, label, rng=None, train=False):
  """Unbiased estimate (B,) of sum_{t=2..T} KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)),
  t drawn from `proposal` at the uniforms u_B: w_t / p_t ||eps - eps_hat||^2."""
  t_B = schedules.sample_t(proposal, u_B)
  w = schedules.diffusion_term_weight(sched, t_B) / proposal[t_B]
  return w * eps_error(apply, sched, params, x0, t_B, eps, label, rng, train)


def train_loss(apply, sched, proposal, params, x0, label, keys, index, total, rng, *, kind,
               hybrid_weight=0.0):
  """The training loss (a scalar, nats per dimension for 'vlb') of the batch x0.

  kind (`diffusion.loss`): 'eps_mse' (t uniform on 1..T), 'vlb' (the diffusion
  term, t from `proposal`), or 'hybrid' = eps_mse + hybrid_weight * vlb, with
  its own draws of t and noise for the vlb. `index` (B,) are the examples'
  indices in the global batch of `total`; `rng` is the step's key.
  """
  if kind not in LOSSES:
    raise ConfigError(f"diffusion.loss must be 'eps_mse', 'vlb' or 'hybrid', got {kind!r}")
  T, D = sched.num_steps, int(np.prod(x0.shape[1:]))
  k_t, _, k_drop, k_t2, _ = [jax.random.fold_in(rng, i) for i in range(5)]
  u = schedules.stratified_uniform(k_t, index, total)
  eps = example_normals(keys, 1, x0.shape[1:])
  dropout_rng = base.device_key(k_drop)
  if kind in ('eps_mse', 'hybrid'):
    t_B = 1 + jnp.minimum((u * T).astype(jnp.int32), T - 1)
    loss = eps_error(apply, sched, params, x0, t_B, eps, label, dropout_rng, True).mean() / D
  if kind == 'eps_mse':
    return loss
  if kind == 'hybrid':
    u = schedules.stratified_uniform(k_t2, index, total)
    eps = example_normals(keys, 3, x0.shape[1:])
  vlb = diffusion_term(apply, sched, proposal, params, x0, u, eps, label, dropout_rng,
                       True).mean() / D
  return vlb if kind == 'vlb' else loss + hybrid_weight * vlb


def bound_terms(apply, sched, proposal, params, x0, label, keys, index, total, rng, *,
                t_samples, num_levels, point_scale=1.0):
  """(prior, decoder, diffusion) nats per example, each (B,); their sum bounds -log p(x0).

  prior: KL(q(x_T|x_0) || N(0, I)). decoder: -log p(x_0|x_1) with x_1 drawn
  from q, Gaussian with std sqrt(beta_1) about x0_hat, integrated over each of
  the `num_levels` bins (images), or for points (num_levels 0) a density in the
  data's own units (x0 = x / point_scale). diffusion: the mean of `t_samples`
  draws of `diffusion_term` per example, stratified over all t_samples * total.
  """
  B, K = x0.shape[0], t_samples
  prior = schedules.prior_kl(sched, x0)
  eps1 = example_normals(keys, 1, x0.shape[1:])
  one = jnp.ones((B,), jnp.int32)
  x0_hat, _ = apply(params, schedules.q_sample(sched, x0, one, eps1), one, label)
  std = jnp.sqrt(sched.beta[1])
  if num_levels:
    decoder = schedules.discretized_gaussian_nll(x0, x0_hat, std, num_levels)
  else:
    decoder = schedules.gaussian_nll(x0, x0_hat, std) + x0[0].size * jnp.log(point_scale)
  u = schedules.stratified_uniform(rng, (index[None] * K + jnp.arange(K)[:, None]).reshape(-1),
                                   total * K)
  epsK = jax.vmap(lambda k: jax.random.normal(k, (K,) + x0.shape[1:]))(
      jax.vmap(jax.random.fold_in, (0, None))(keys, 2))
  epsK = jnp.swapaxes(epsK, 0, 1).reshape((K * B,) + x0.shape[1:])
  rep = lambda a: None if a is None else jnp.tile(a, (K,) + (1,) * (a.ndim - 1))
  diff = diffusion_term(apply, sched, proposal, params, rep(x0), u, epsK, rep(label))
  return prior, decoder, diff.reshape(K, B).mean(0)
