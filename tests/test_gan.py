"""GAN family: losses against their formulas, penalties against finite
differences, D and G steps that touch only their own network, mode coverage
on hand-made points, training that moves both losses, 4 devices = 1."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import cpu_devices
from genjax.experiments import gan as gan_config
from genjax import parallel
from genjax.data import Dataset
from genjax.evals import classifier
from genjax.evals.modes import mode_stats
from genjax.families import gan
from genjax.families.gan import losses, networks

L_REAL = np.array([-2.0, -0.5, 0.0, 0.3, 4.0], np.float32)
L_FAKE = np.array([-3.0, -1.0, 0.2, 1.5, 2.5], np.float32)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.float64(x)))


def test_losses_equal_their_formulas():
  sr, sf = _sigmoid(L_REAL), _sigmoid(L_FAKE)
  d_bce = -np.mean(np.log(sr)) - np.mean(np.log(1 - sf))
  expected = {
      'minimax': (d_bce, np.mean(np.log(1 - sf))),
      'nonsaturating': (d_bce, -np.mean(np.log(sf))),
      'hinge': (np.mean(np.maximum(0, 1 - L_REAL)) + np.mean(np.maximum(0, 1 + L_FAKE)),
                -np.mean(L_FAKE)),
      'wgan_gp': (np.mean(L_FAKE) - np.mean(L_REAL), -np.mean(L_FAKE)),
  }
  for kind, (d, g) in expected.items():
    np.testing.assert_allclose(losses.d_loss(kind, L_REAL, L_FAKE), d, rtol=1e-5, err_msg=kind)
    np.testing.assert_allclose(losses.g_loss(kind, L_FAKE), g, rtol=1e-5, err_msg=kind)
  with pytest.raises(ValueError, match='gan.loss'):
    losses.d_loss('lsgan', L_REAL, L_FAKE)


def _smooth_critic():
  A = jax.random.normal(jax.random.PRNGKey(0), (3, 8))
  b = jax.random.normal(jax.random.PRNGKey(1), (8,))
  return lambda x: jnp.tanh(x @ A) @ b


def _fd_grads(f, x, h=1e-3):
  """Central differences of the per-example f, in float64 numpy."""
  g = np.zeros_like(x, np.float64)
  for j in range(x.shape[1]):
    e = np.zeros_like(x)
    e[:, j] = h
    g[:, j] = (np.asarray(f(x + e), np.float64) - np.asarray(f(x - e), np.float64)) / (2 * h)
  return g


def test_penalties_agree_with_finite_differences():
  d_fn = _smooth_critic()
  rng = np.random.default_rng(0)
  real, fake = (rng.normal(size=(6, 3)).astype(np.float32) for _ in range(2))
  eps = rng.uniform(size=6).astype(np.float32)
  x_hat = eps[:, None] * real + (1 - eps[:, None]) * fake
  norms = np.linalg.norm(_fd_grads(d_fn, x_hat), axis=1)
  np.testing.assert_allclose(losses.gradient_penalty(d_fn, real, fake, eps),
                             np.mean((norms - 1) ** 2), rtol=2e-3)
  r1 = np.mean(np.sum(_fd_grads(d_fn, real) ** 2, axis=1))
  np.testing.assert_allclose(losses.r1_penalty(d_fn, real), r1, rtol=2e-3)


def test_pack_groups_consecutive_examples():
  x = np.arange(12, dtype=np.float32).reshape(6, 2)
  np.testing.assert_array_equal(networks.pack(x, 2), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
  img = np.arange(4 * 2 * 2 * 1).reshape(4, 2, 2, 1)
  packed = networks.pack(img, 2)
  assert packed.shape == (2, 2, 2, 2)
  np.testing.assert_array_equal(packed[1, ..., 0], img[2, ..., 0])
  np.testing.assert_array_equal(packed[1, ..., 1], img[3, ..., 0])


@pytest.mark.parametrize('shape', [(3, 8, 8, 5), (2, 7, 9, 3), (1, 2, 2, 1)])
def test_stride2_conv_is_the_strided_convolution_with_its_gradients(shape):
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  conv = nn.Conv(6, (4, 4), strides=(2, 2), padding='SAME')
  params = conv.init(jax.random.PRNGKey(0), x)
  ours = networks.Stride2Conv(6)
  chex.assert_trees_all_equal(ours.init(jax.random.PRNGKey(0), x), params)  # same init
  f = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))  # a non-linear cotangent
  np.testing.assert_allclose(ours.apply(params, x), conv.apply(params, x), atol=1e-5)
  chex.assert_trees_all_close(jax.grad(f(ours), argnums=(0, 1))(params, x),
                              jax.grad(f(conv), argnums=(0, 1))(params, x), atol=1e-5)


def test_mode_coverage_on_hand_made_points():
  centers = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  std = 0.01
  rng = np.random.default_rng(0)
  all_modes = np.repeat(centers, 25, 0) + 0.5 * std * rng.standard_normal((100, 2))
  r = mode_stats(all_modes, centers, std)
  assert (r['modes'], r['high_quality']) == (4, 1.0)
  assert abs(r['kl_uniform']) < 1e-12
  one_mode = centers[2] + std * rng.uniform(-1, 1, (50, 2))
  r = mode_stats(one_mode, centers, std)
  assert (r['modes'], r['high_quality']) == (1, 1.0)
  np.testing.assert_allclose(r['kl_uniform'], np.log(4))
  off = np.array([[0.5, 0.5], [0.5, 0.0], [0.0, 0.031], [2.0, 2.0]])  # 0.031 > 3 std
  r = mode_stats(off, centers, std)
  assert (r['modes'], r['high_quality']) == (0, 0.0)
  mixed = np.concatenate([centers[:3] + [0.0, 0.029], off])  # 2.9 std: captured
  r = mode_stats(mixed, centers, std)
  assert (r['modes'], r['high_quality']) == (3, 3 / 7)


def test_histogram_entropy():
  K = 10
  uniform = np.eye(K)[np.arange(100) % K]
  r = classifier.histogram_stats(uniform)
  np.testing.assert_allclose(r['entropy'], np.log(K))
  assert r['classes'] == K and abs(r['kl_uniform']) < 1e-12
  collapsed = classifier.histogram_stats(np.eye(K)[np.full(100, 3)])
  assert collapsed['entropy'] == 0.0 and collapsed['class_3'] == 1.0 and collapsed['classes'] == 1


def _setup(variant='digits', **overrides):
  c = gan_config.get_config(variant + ',smoke')
  c.optim.warmup_steps = 0  # the smoke config warms up from lr 0: the first step would be a no-op
  for k, v in overrides.items():
    section, leaf = k.split('.')
    c[section][leaf] = v
  data = Dataset(c.data, seed=0)
  family = gan.build(c, data.info)
  return c, data, family


def _on_one_device(fn):
  """Runs a per-device function (it uses collectives) on a leading device axis of 1."""
  return jax.jit(jax.vmap(fn, axis_name='data'))


def _add_axis(tree):
  return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], tree)


def _changed(a, b):
  return any(not np.array_equal(x, y) for x, y in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_d_step_leaves_g_alone_and_g_step_leaves_d_alone():
  _, data, family = _setup(**{'gan.r1_weight': 1.0})
  steps = family.tools['steps']
  batch = data.train_batch(0)
  state = family.init(jax.random.PRNGKey(0), batch)
  real = gan.to_model(batch, data.info, 1.0)
  label = batch['label']
  d_step = _on_one_device(lambda s, r, l, k: steps.d_step(s, r, l, k)[0])
  g_step = _on_one_device(lambda s, k: steps.g_step(s, 16, label, k)[0])
  key = jax.random.PRNGKey(1)[None]
  after_d = jax.tree_util.tree_map(lambda x: x[0], d_step(_add_axis(state), real[None],
                                                          label[None], key))
  after_g = jax.tree_util.tree_map(lambda x: x[0], g_step(_add_axis(state), key))
  chex.assert_trees_all_equal(after_d.g_params, state.g_params)
  chex.assert_trees_all_equal(after_d.g_opt_state, state.g_opt_state)
  assert _changed(after_d.d_params, state.d_params)
  chex.assert_trees_all_equal(after_g.d_params, state.d_params)
  chex.assert_trees_all_equal(after_g.d_opt_state, state.d_opt_state)
  assert _changed(after_g.g_params, state.g_params)


def test_training_moves_both_losses():
  """On real digits: D steps against a fixed G lower D's loss; G steps against
  a fixed D lower G's loss; the full step changes both."""
  _, data, family = _setup(**{'optim.g_lr': 1e-3, 'optim.d_lr': 1e-3})
  steps = family.tools['steps']
  batch = data.train_batch(0)
  state0 = family.init(jax.random.PRNGKey(0), batch)
  real = gan.to_model(batch, data.info, 1.0)[None]
  label = batch['label'][None]
  key = jax.random.PRNGKey(1)[None]  # the same fakes every step
  d_step = _on_one_device(lambda s, k: steps.d_step(s, real[0], label[0], k))
  g_step = _on_one_device(lambda s, k: steps.g_step(s, 16, label[0], k))
  state, d_losses = _add_axis(state0), []
  for _ in range(15):
    state, m = d_step(state, key)
    d_losses.append(float(m['d_loss'][0]))
  assert d_losses[-1] < d_losses[0] - 0.1, d_losses
  state, g_losses = _add_axis(state0), []
  for _ in range(15):
    state, m = g_step(state, key)
    g_losses.append(float(m['g_loss'][0]))
  assert g_losses[-1] < g_losses[0] - 0.05, g_losses
  train = _on_one_device(family.train_step)
  state, first = train(_add_axis(state0), _add_axis(batch), key)
  for s in range(1, 6):
    state, last = train(state, _add_axis(data.train_batch(s)), jax.random.PRNGKey(s)[None])
  for k in ('d_loss', 'g_loss'):
    assert np.isfinite(last[k]).all() and abs(float(last[k][0] - first[k][0])) > 1e-3, k


def _two_steps(variant, overrides, devices):
  _, data, family = _setup(variant, **overrides)
  chex.clear_trace_counter()  # a fresh family may reuse the last one's id: one trace per call
  state = family.init(jax.random.PRNGKey(0), data.train_batch(0))
  step = parallel.train_step(chex.assert_max_traces(family.train_step, n=1), devices=devices)
  rstate = parallel.replicate(state, len(devices))
  for s in range(2):
    rstate, metrics = step(rstate, parallel.shard(data.train_batch(s), len(devices)),
                           jax.random.PRNGKey(s))
  return parallel.unreplicate(rstate), parallel.unreplicate(metrics)


@pytest.mark.parametrize('variant,overrides', [
    ('digits', {'gan.n_critic': 2, 'gan.r1_weight': 1.0}),
    ('ring8', {'gan.loss': 'wgan_gp', 'gan.gp_weight': 10.0, 'gan.n_critic': 2}),
])
def test_four_devices_match_one(variant, overrides):
  """Noise is drawn per global example and D's slices are strided, so the
  device count changes nothing but the order of sums."""
  one, m1 = _two_steps(variant, overrides, cpu_devices(1))
  four, m4 = _two_steps(variant, overrides, cpu_devices(4))
  for k in ('d_loss', 'g_loss', 'd_real', 'd_fake'):
    np.testing.assert_allclose(m1[k], m4[k], rtol=1e-4, atol=1e-6, err_msg=k)
  chex.assert_trees_all_close(one.g_params, four.g_params, rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(one.d_params, four.d_params, rtol=1e-4, atol=1e-6)


def test_sample_eval_and_interpolation():
  _, data, family = _setup('digits', **{'model.conditional': True})
  state = family.init(jax.random.PRNGKey(0), data.train_batch(0))
  s = family.sample(state, jax.random.PRNGKey(3), 20)
  lo, hi = data.info.value_range
  assert s['image'].shape == (20, 8, 8, 1) and s['image'].min() >= lo and s['image'].max() <= hi
  np.testing.assert_array_equal(s['label'], np.arange(20) % 10)
  paths = family.tools['interpolate'](state, jax.random.PRNGKey(4), num_paths=2, num_steps=5)
  assert paths['image'].shape == (10, 8, 8, 1)
  # slerp: the ends are the end points, and the path keeps the norm of equal-norm ends
  z0, z1 = jnp.array([[3.0, 0.0]]), jnp.array([[0.0, 3.0]])
  np.testing.assert_allclose(gan.slerp(z0, z1, 0.0), z0, atol=1e-6)
  np.testing.assert_allclose(gan.slerp(z0, z1, 1.0), z1, atol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(gan.slerp(z0, z1, 0.3)), 3.0, rtol=1e-6)
  # eval: the last batch's padding does not count
  batch = next(data.eval_batches(max_batches=1))
  batch['mask'][-8:] = False
  sums = parallel.eval_step(family.eval_step, cpu_devices(1))(state, batch, jax.random.PRNGKey(0))
  assert float(sums['examples']) == len(batch['mask']) - 8
