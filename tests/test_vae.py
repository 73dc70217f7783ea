"""VAE family: the KL, the decoder likelihoods, the IWAE bounds, the gradient
path, training on digits; the anomaly evaluator's ROC AUC."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.experiments import vae as vae_config
from genjax import parallel, run
from genjax.data.pipeline import DatasetInfo
from genjax.evals import anomaly
from genjax.families import base, vae
from genjax.families.vae import model as vm
from genjax.families.vae import objective

POINTS = DatasetInfo('toy', 'points', (2,), 0, 0, {'train': 10})


def tiny(info, latent_dim=2, seed=0):
  model = vm.VAE(shape=info.shape, likelihood=vae.default_likelihood(info),
                 num_levels=info.num_levels, latent_dim=latent_dim, channels=(8,), hidden=16,
                 num_layers=1)
  x = jnp.zeros((1,) + info.shape, jnp.uint8 if info.modality == 'image' else jnp.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), x, jnp.zeros((1, latent_dim)))['params']
  return model, params


def test_analytic_kl_equals_monte_carlo():
  mean = jnp.array([[0.5, -1.0, 2.0]])
  logvar = jnp.array([[-1.0, 0.3, 0.0]])
  eps = jax.random.normal(jax.random.PRNGKey(0), (400_000, 1, 3))
  z = mean + jnp.exp(0.5 * logvar) * eps
  terms = vm.posterior_logpdf(eps, logvar) - vm.std_normal_logpdf(z)  # log q - log p
  se = float(terms.std() / np.sqrt(terms.shape[0]))
  # 5 standard errors: fails by chance with probability < 1e-6.
  np.testing.assert_allclose(float(terms.mean()), float(vm.gaussian_kl(mean, logvar)[0]),
                             atol=5 * se)
  assert float(vm.gaussian_kl(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0]) == 0.0


@pytest.mark.parametrize('num_levels', [2, 17, 256])
def test_discrete_likelihoods_sum_to_one(num_levels):
  rng = np.random.default_rng(0)
  levels = jnp.arange(num_levels).reshape(num_levels, 1, 1, 1)  # each level as a 1-pixel image
  # Logistic: means from far below to far above the range, scales from sharp to broad.
  for mean, log_scale in [(-3.0, -5.0), (-0.2, -4.0), (0.13, -1.0), (1.0, 0.5), (2.5, -6.0)]:
    out = jnp.broadcast_to(jnp.array([mean, log_scale]), (num_levels, 1, 1, 1, 2))
    logp = vm.decoder_logprob('logistic', out, levels, num_levels)
    assert np.isfinite(np.asarray(logp)).all()
    np.testing.assert_allclose(float(jnp.exp(logp).sum()), 1.0, atol=1e-5)
  logits = jnp.asarray(rng.normal(size=num_levels) * 3, jnp.float32)
  out = jnp.broadcast_to(logits, (num_levels, 1, 1, 1, num_levels))
  logp = vm.decoder_logprob('categorical', out, levels, num_levels)
  np.testing.assert_allclose(float(jnp.exp(logp).sum()), 1.0, atol=1e-5)


def test_logistic_bin_mass_matches_the_cdf_difference():
  # Where the naive difference of sigmoids is accurate, the stable form agrees with it.
  x = jnp.array([0, 3, 7, 12, 16])
  mean, log_scale, L = jnp.full(5, 0.1), jnp.full(5, -1.5), 17
  h, s = 1.0 / (L - 1), np.exp(-1.5)
  xs = 2.0 * np.asarray(x) * h - 1
  cdf = lambda v: 1 / (1 + np.exp(-(v - 0.1) / s))
  want = cdf(xs + h) - cdf(xs - h)
  want[0], want[-1] = cdf(xs[0] + h), 1 - cdf(xs[-1] - h)
  got = np.exp(vm.logistic_logprob(x, mean, log_scale, L))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def _bounds_over_draws(model, params, x, ks, draws, chunk):
  """Each draw r uses keys folded with r: ({K: draws x B}, ELBO estimates draws x B)."""
  keys = jax.random.split(jax.random.PRNGKey(7), x.shape[0])
  one = lambda r: vm.iwae_bounds(model, params, x, jax.vmap(
      lambda k: jax.random.fold_in(k, r))(keys), ks, chunk)[:2]
  bounds, elbo = jax.jit(jax.vmap(one))(jnp.arange(draws))
  return {k: np.asarray(v) for k, v in bounds.items()}, np.asarray(elbo)


def test_iwae_with_one_sample_is_the_elbo_in_expectation():
  model, params = tiny(POINTS)
  x = jnp.array([[0.3, -1.2], [2.0, 0.5]])
  bounds, _ = _bounds_over_draws(model, params, x, (1,), 4000, 1)
  # The ELBO: E_q log p(x|z) (many draws) minus the closed-form KL.

  @jax.jit
  def reference():
    mean, logvar = model.apply({'params': params}, x, method=model.encode)
    eps = jax.random.normal(jax.random.PRNGKey(3), (20_000, 2, 2))
    _, logpx = vm.log_weights(model, params, x, mean, logvar, eps)
    return logpx, vm.gaussian_kl(mean, logvar)

  logpx, kl = reference()
  elbo = np.asarray(logpx.mean(0) - kl)
  se = np.sqrt(bounds[1].var(0) / 4000 + np.asarray(logpx).var(0) / 20_000)
  np.testing.assert_allclose(bounds[1].mean(0), elbo, atol=5 * se.max())


def test_iwae_bound_rises_with_k_and_chunking_is_exact():
  model, params = tiny(POINTS, latent_dim=3, seed=1)
  x = jnp.array([[0.3, -1.2], [2.0, 0.5], [-1.5, 1.0]])
  ks = (4, 16, 64)
  bounds, elbo = _bounds_over_draws(model, params, x, ks, 100, 4)
  # The K = 1 bound's expectation is the ELBO (previous test); estimated here
  # by the mean of log w over all 64 samples of each draw.
  means = [elbo.mean(0)] + [bounds[k].mean(0) for k in ks]
  sds = [elbo.std(0)] + [bounds[k].std(0) for k in ks]
  # E[bound_K] rises with K (Burda et al. 2016, Thm 1): the mean over 100 draws
  # may not fall by more than its noise, per example and K.
  for i in range(len(ks)):
    se = np.sqrt((sds[i] ** 2 + sds[i + 1] ** 2) / 100)
    assert np.all(means[i + 1] - means[i] > -3 * se), (i, means)
  assert np.all(means[-1] > means[0] + 0.05)
  # The chunked accumulation equals a plain logsumexp over the same samples.
  keys = jax.random.split(jax.random.PRNGKey(5), 3)
  got, _, _ = jax.jit(lambda: vm.iwae_bounds(model, params, x, keys, (8, 16), chunk=4))()

  @jax.jit
  def all_weights():
    mean, logvar = model.apply({'params': params}, x, method=model.encode)
    eps = jnp.concatenate([vm.draw_eps(keys, i, 4, 3) for i in range(4)])
    return vm.log_weights(model, params, x, mean, logvar, eps)[0]

  lw = all_weights()
  for k in (8, 16):
    want = jax.nn.logsumexp(lw[:k], 0) - np.log(k)
    np.testing.assert_allclose(got[k], want, rtol=1e-5)


def _by_hand_log_p_x_given_z(model, params, x, z):
  """log p(x|z) of a categorical decoder, from its logits by numpy (B,)."""
  logits = np.asarray(model.apply({'params': params}, jnp.asarray(z, jnp.float32),
                                  method=model.decode), np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  picked = np.take_along_axis(logp, np.asarray(x, np.int64)[..., None], -1)[..., 0]
  return picked.reshape(len(x), -1).sum(-1)


@pytest.mark.parametrize('train_k', [1, 3])
def test_objective_is_reconstruction_minus_analytic_kl(train_k):
  """objective.per_example_loss against numpy: the same draws z = mean + std * eps
  (eps from each example's key, as documented), log p(x|z) from the decoder's
  logits, and KL(N(mean, var) || N(0, I)) in closed form; K = 1: loss = recon + beta
  KL (the negative ELBO at beta 1); K > 1: the IWAE bound, beta scaling log p(z) -
  log q(z|x) inside each weight."""
  info = DatasetInfo('tiny', 'image', (4, 4, 1), 5, 0, {'train': 1})
  model, params = tiny(info, latent_dim=3, seed=3)
  x = np.random.default_rng(0).integers(0, 5, (4, 4, 4, 1))
  rng = jax.random.PRNGKey(9)
  mean, logvar = (np.asarray(a, np.float64) for a in
                  model.apply({'params': params}, jnp.asarray(x), method=model.encode))
  kl = 0.5 * np.sum(np.exp(logvar) + mean ** 2 - 1.0 - logvar, -1)
  eps = np.asarray(vm.draw_eps(base.example_keys(rng, 4), 0, train_k, 3), np.float64)  # (K, B, Z)
  z = mean + np.exp(0.5 * logvar) * eps
  logpx = np.stack([_by_hand_log_p_x_given_z(model, params, x, zk) for zk in z])  # (K, B)
  log_prior = -0.5 * np.sum(z ** 2 + np.log(2 * np.pi), -1)
  log_q = -0.5 * np.sum(eps ** 2 + logvar + np.log(2 * np.pi), -1)
  for beta in (1.0, 0.3):
    loss, recon, got_kl = jax.jit(objective.per_example_loss, static_argnums=(0, 5))(
        model, params, jnp.asarray(x), rng, beta, train_k)
    np.testing.assert_allclose(got_kl, kl, rtol=1e-5)
    np.testing.assert_allclose(recon, -logpx.mean(0), rtol=1e-5)
    if train_k == 1:  # at beta 1, minus the ELBO
      np.testing.assert_allclose(loss, -logpx[0] + beta * kl, rtol=1e-5)
    else:
      lw = logpx + beta * (log_prior - log_q)
      iwae = np.log(np.mean(np.exp(lw - lw.max(0)), 0)) + lw.max(0)
      np.testing.assert_allclose(loss, -iwae, rtol=1e-5)


def test_reparameterised_gradient_matches_score_function_estimate():
  """d/d(mean, logvar) of E_q[log p(x, z) - log q(z|x)], by the path (reparam.)
  and by the score function E[f(z) d log q(z)] (the direct term has mean zero)."""
  model, params = tiny(POINTS, latent_dim=2, seed=2)
  x = jnp.array([[0.7, -0.4]])
  mean0 = jnp.array([[0.3, -0.2]])
  logvar0 = jnp.array([[-0.5, 0.2]])
  n = 400_000
  eps = jax.random.normal(jax.random.PRNGKey(4), (n, 1, 2))

  def elbo(mean, logvar):
    return vm.log_weights(model, params, x, mean, logvar, eps)[0].mean()

  path = jax.jit(jax.grad(elbo, argnums=(0, 1)))(mean0, logvar0)

  def logq(mean, logvar, z_Z):  # one sample, at fixed z
    e = (z_Z - mean[0]) * jnp.exp(-0.5 * logvar[0])
    return vm.posterior_logpdf(e, logvar[0])

  @jax.jit
  def score_terms():
    z = mean0 + jnp.exp(0.5 * logvar0) * eps
    f = vm.log_weights(model, params, x, mean0, logvar0, eps)[0][:, 0]  # (n,)
    f = f - f.mean()  # a constant baseline leaves the expectation unchanged, lowers variance
    dmean, dlogvar = jax.vmap(jax.grad(logq, argnums=(0, 1)), (None, None, 0))(
        mean0, logvar0, z[:, 0])  # (n, 1, 2) each
    return f[:, None, None] * dmean, f[:, None, None] * dlogvar

  for g, terms in zip(path, score_terms()):
    terms = np.asarray(terms)
    se = terms.std(0) / np.sqrt(n)
    np.testing.assert_allclose(np.asarray(g), terms.mean(0), atol=float(5 * se.max()) + 1e-4)


def test_training_lowers_the_bound_on_digits(tmp_path):
  config = vae_config.get_config('digits,smoke')
  config.train.num_steps = 40
  config.optim.lr = 3e-3
  config.evals = {}
  ex = run.experiment(config, str(tmp_path / 'run'))
  step = parallel.train_step(ex.family.train_step, devices=jax.devices()[:1])
  rstate = parallel.replicate(ex.start_state, 1)
  batch = next(ex.data.eval_batches('validation'))
  evaluate = lambda: parallel.unreplicate(parallel.eval_step(
      ex.family.eval_step, devices=jax.devices()[:1])(rstate, parallel.shard(batch, 1),
                                                      jax.random.PRNGKey(0)))
  before = evaluate()
  for s in range(40):
    rstate, metrics = step(rstate, parallel.shard(ex.data.train_batch(s), 1),
                           jax.random.PRNGKey(s))
  after = evaluate()
  n = float(before['examples'])
  # A uniform model pays 64 log 17 = 181 nats per digit.
  assert before['nll'] / n > 170
  assert after['nll'] / n < before['nll'] / n - 20, (before['nll'] / n, after['nll'] / n)
  assert after['nll'] <= after['nll_k1']  # K = 8 beneath the ELBO


def test_excluded_label_gets_no_gradient():
  config = vae_config.get_config('digits,smoke')
  config.model.exclude_label = 3
  config.model.train_k = 1
  info = DatasetInfo('digits', 'image', (8, 8, 1), 17, 10, {'train': 10})
  family = vae.build(config, info)
  images = np.random.default_rng(0).integers(0, 17, (4, 8, 8, 1)).astype(np.uint8)
  state = family.init(jax.random.PRNGKey(0), {'image': images})
  step = parallel.train_step(family.train_step, devices=jax.devices()[:1])
  run_step = lambda imgs, labels: parallel.unreplicate(step(
      parallel.replicate(state, 1), parallel.shard({'image': imgs, 'label': labels}, 1),
      jax.random.PRNGKey(1)))[0].params
  labels = np.array([3, 1, 2, 5], np.int32)
  other = images.copy()
  other[0] = 16 - other[0]  # change only the excluded example
  a, b = run_step(images, labels), run_step(other, labels)
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_roc_auc_against_a_hand_computation():
  # Inliers 1, 2, 3, 3; outliers 3, 4, 0. Pairs (outlier > inlier) + ties / 2:
  # outlier 3: > 1, 2, ties with two 3s -> 2 + 1 = 3; outlier 4: 4; outlier 0: 0.
  # AUC = 7 / 12.
  assert anomaly.roc_auc([1, 2, 3, 3], [3, 4, 0]) == pytest.approx(7 / 12)
  assert anomaly.roc_auc([0, 1], [2, 3]) == 1.0


def test_roc_curve_runs_from_0_to_1_and_its_area_is_the_auc():
  rng = np.random.default_rng(0)
  inliers, outliers = rng.normal(size=300), rng.normal(0.8, 1.0, size=200).round(1)  # with ties
  fpr, tpr = anomaly.roc_curve(inliers, outliers)
  assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
  assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
  area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids: ties count half
  assert area == pytest.approx(anomaly.roc_auc(inliers, outliers), abs=1e-12)
  assert anomaly.roc_auc([2, 3], [0, 1]) == 0.0
  assert anomaly.roc_auc([5, 5], [5]) == 0.5
  np.testing.assert_array_equal(anomaly.rank_average([10, 30, 20, 20]), [1, 4, 2.5, 2.5])
  rng = np.random.default_rng(0)
  a, b = rng.integers(0, 5, 60), rng.integers(2, 8, 40)
  brute = np.mean([(o > i) + 0.5 * (o == i) for o in b for i in a])
  assert anomaly.roc_auc(a, b) == pytest.approx(brute)
