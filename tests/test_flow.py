"""Flow family: invertibility, log-determinants against jax.jacfwd, ActNorm's
data-dependent init, normalisation of the density, training lowers the NLL."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.experiments import flow as flow_config
from genjax import parallel
from genjax.data.pipeline import DatasetInfo
from genjax.evals.density import mixture_log_prob
from genjax.families import flow
from genjax.families.flow import density, layers, model as flow_model

IMAGE = (2, 4, 4, 2)  # B, H, W, C: small enough for a full Jacobian
TINY_NET = functools.partial(layers.ConvNet, hidden=8)
TINY_MLP = functools.partial(layers.MLP, hidden=8, depth=1)

LAYERS = {
    'actnorm': (layers.ActNorm(), IMAGE),
    'actnorm_vector': (layers.ActNorm(), (3, 5)),
    'checkerboard0': (layers.AffineCoupling('checkerboard', 0, TINY_NET), IMAGE),
    'checkerboard1': (layers.AffineCoupling('checkerboard', 1, TINY_NET), IMAGE),
    'channel0': (layers.AffineCoupling('channel', 0, TINY_NET), (2, 4, 4, 3)),
    'channel1': (layers.AffineCoupling('channel', 1, TINY_NET), (2, 4, 4, 3)),
    'half_split': (layers.AffineCoupling('channel', 0, TINY_MLP), (3, 5)),
    'half_split1': (layers.AffineCoupling('channel', 1, TINY_MLP), (3, 5)),
    'conv1x1_lu': (layers.InvertibleLinear(seed=3), IMAGE),
    'linear_lu_vector': (layers.InvertibleLinear(seed=4), (3, 5)),
    'squeeze': (layers.Squeeze(), IMAGE),
    'permutation': (layers.Permutation('random', seed=1), (3, 5)),
    'logit': (layers.Logit(0.05), IMAGE),
    'image_flow': (flow_model.ImageFlow(shape=(4, 4, 2), levels=2, steps=1, checkerboard_steps=1,
                                        hidden=8), IMAGE),
    'vector_flow': (flow_model.VectorFlow(steps=3, hidden=8, depth=1), (3, 5)),
}


def init_perturbed(layer, shape, seed=0):
  """Params after init, moved away from the identity (couplings start there)."""
  x = jax.random.uniform(jax.random.PRNGKey(seed), shape, minval=0.05, maxval=0.95)
  params = layer.init(jax.random.PRNGKey(seed + 1), x, method=layer.forward)
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 2), len(leaves))
  leaves = [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(tree, leaves), x


@pytest.mark.parametrize('name', sorted(LAYERS))
def test_inverts_and_log_det_equals_log_abs_det_jacobian(name):
  layer, shape = LAYERS[name]
  params, x = init_perturbed(layer, shape)
  forward = jax.jit(lambda x: layer.apply(params, x, method=layer.forward))
  z, log_det = forward(x)
  assert log_det.shape == (shape[0],)
  x_back = jax.jit(lambda z: layer.apply(params, z, method=layer.inverse))(z)
  np.testing.assert_allclose(x_back.reshape(x.shape), x, atol=2e-5)

  # Examples are independent, so the Jacobian of the batch is block diagonal:
  # its blocks are the per-example Jacobians.
  jac = jax.jit(jax.jacfwd(lambda x: forward(x)[0].reshape(shape[0], -1)))(x)
  jac = np.asarray(jac, np.float64).reshape(shape[0], -1, shape[0], int(np.prod(shape[1:])))
  for i in range(shape[0]):
    _, expected = np.linalg.slogdet(jac[i, :, i])
    np.testing.assert_allclose(log_det[i], expected, atol=1e-3, rtol=1e-4)


def _change_of_variables_nll(forward, x):
  """-log N(z; 0, I) - log|det dz/dx| per example, the Jacobian by jax.jacfwd (float64)."""
  z = np.asarray(forward(x), np.float64).reshape(x.shape[0], -1)
  D = z.shape[1]
  jac = np.asarray(jax.jit(jax.jacfwd(lambda x: forward(x).reshape(x.shape[0], -1)))(x),
                   np.float64)
  jac = jac.reshape(x.shape[0], D, x.shape[0], D)
  log_det = np.array([np.linalg.slogdet(jac[i, :, i])[1] for i in range(x.shape[0])])
  return 0.5 * (z ** 2).sum(1) + 0.5 * D * np.log(2 * np.pi) - log_det


def test_nll_of_points_is_the_change_of_variables():
  model = flow_model.VectorFlow(steps=3, hidden=8, depth=1)
  params, x = init_perturbed(model, (3, 5))
  got = density.nll(model, params['params'], {'x': x}, jax.random.PRNGKey(0))
  forward = lambda x: model.apply(params, x, method=model.forward)[0]
  np.testing.assert_allclose(got, _change_of_variables_nll(forward, x), rtol=1e-4, atol=1e-3)


def test_nll_of_images_is_the_change_of_variables_of_the_dequantised_pixels():
  """On v = x + u: -log p(v) = -log N(z) - log|det dz/dv|, whose Jacobian is taken
  with respect to v itself, so the 1/L of y = v / L (the bin width) is in it."""
  L = 5
  model = flow_model.ImageFlow(shape=(4, 4, 2), levels=2, steps=1, checkerboard_steps=1, hidden=8)
  params, _ = init_perturbed(model, IMAGE)
  images = np.random.default_rng(0).integers(0, L, IMAGE).astype(np.uint8)
  rng = jax.random.PRNGKey(4)
  v = np.asarray(density.dequantise({'image': images}, rng, L))
  assert np.all((v >= images) & (v < images + 1.0)) and np.all(v - images > 0)
  got = density.nll(model, params['params'], {'image': images}, rng, L)
  forward = lambda v: model.apply(params, v / L, method=model.forward)[0]
  np.testing.assert_allclose(got, _change_of_variables_nll(forward, jnp.asarray(v)), rtol=1e-4,
                             atol=1e-3)


@pytest.mark.parametrize('shape', [(64, 4, 4, 3), (256, 3)])
def test_actnorm_data_init_standardises_its_batch(shape):
  x = 3.0 + 2.5 * jax.random.normal(jax.random.PRNGKey(0), shape)
  x = x * jnp.arange(1, shape[-1] + 1)  # channels on different scales
  norm = layers.ActNorm()
  params = norm.init(jax.random.PRNGKey(1), x, method=norm.forward)
  z, _ = norm.apply(params, x, method=norm.forward)
  axes = tuple(range(len(shape) - 1))
  np.testing.assert_allclose(z.mean(axes), 0.0, atol=1e-5)
  np.testing.assert_allclose(z.var(axes), 1.0, atol=1e-4)


def test_every_actnorm_of_the_image_flow_sees_a_standardised_batch():
  """Init runs layer by layer, so each ActNorm sees the previous ones' output."""
  net = flow_model.ImageFlow(shape=(8, 8, 1), levels=2, steps=2, checkerboard_steps=2, hidden=8)
  x = jax.random.uniform(jax.random.PRNGKey(0), (32, 8, 8, 1)) ** 3
  params = net.init(jax.random.PRNGKey(1), x, method=net.forward)
  _, state = net.apply(params, x, method=net.forward,
                       capture_intermediates=lambda m, name: (isinstance(m, layers.ActNorm)
                                                              and name == '__call__'))
  # Each ActNorm's '__call__' entry holds its outputs: ((z, log_det),).
  calls = jax.tree_util.tree_leaves(state['intermediates'], is_leaf=lambda v: isinstance(v, tuple))
  zs = [out[0][0] for out in calls]
  assert len(zs) == 2 + 2 * 2
  for z in zs:
    np.testing.assert_allclose(z.mean((0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std((0, 1, 2)), 1.0, atol=1e-3)


def points_family(steps=3000):
  config = flow_config.get_config('moons,smoke')
  config.model.steps, config.model.hidden, config.model.depth = 4, 32, 2
  config.train.num_steps = steps
  config.optim.lr, config.optim.warmup_steps = 1e-2, 10
  info = DatasetInfo('gauss', 'points', (2,), 0, 0, {'train': 1})
  return flow.build(config, info)


def train(family, state, batches, rng):
  step = parallel.train_step(family.train_step, devices=jax.devices()[:1])
  rstate = parallel.replicate(state, 1)
  for i, batch in enumerate(batches):
    rstate, _ = step(rstate, parallel.shard(batch, 1), jax.random.fold_in(rng, i))
  return parallel.unreplicate(rstate)


def test_density_fitted_to_a_gaussian_integrates_to_one():
  mean, chol = np.array([0.5, -1.0]), np.array([[1.0, 0.0], [0.6, 0.5]])
  rng = np.random.default_rng(0)
  draw = lambda n: {'x': (mean + rng.standard_normal((n, 2)) @ chol.T).astype(np.float32)}
  family = points_family()
  state = family.init(jax.random.PRNGKey(0), draw(256))
  state = train(family, state, [draw(256) for _ in range(150)], jax.random.PRNGKey(1))
  # Riemann sum over a window holding all but ~1e-6 of the Gaussian's mass.
  xs, ys = np.linspace(-5.5, 6.5, 241), np.linspace(-7.0, 5.0, 241)
  grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
  density = np.exp(family.tools['log_prob'](state, grid))
  mass = density.sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
  assert abs(mass - 1.0) < 0.02, mass
  # And it fits: test NLL within 0.1 nats of the Gaussian's entropy.
  entropy = 1.0 + np.log(2 * np.pi) + np.log(abs(np.linalg.det(chol)))
  nll = -family.tools['log_prob'](state, draw(4000)['x']).mean()
  assert nll - entropy < 0.1, (nll, entropy)


def test_dequantised_density_has_unit_mass_on_the_pixel_cube():
  """log_prob of images includes the bin width: p(v) over [0, L)^D integrates to ~1."""
  config = flow_config.get_config('digits,smoke')
  config.model.alpha = 1e-4  # the logit maps [0, 1] onto nearly all of R
  config.model.levels = 1
  info = DatasetInfo('tiny', 'image', (2, 2, 1), 5, 0, {'train': 1})
  family = flow.build(config, info)
  images = np.random.default_rng(0).integers(0, 5, (32, 2, 2, 1)).astype(np.uint8)
  state = family.init(jax.random.PRNGKey(0), {'image': images})
  v = np.random.default_rng(1).uniform(0, 5, (400_000, 2, 2, 1)).astype(np.float32)
  p = np.exp(family.tools['log_prob'](state, v).astype(np.float64))
  mass, err = p.mean() * 5 ** 4, p.std() / np.sqrt(len(p)) * 5 ** 4
  assert abs(mass - 1.0) < max(4 * err, 0.02), (mass, err)


def test_mixture_log_prob_matches_a_single_gaussian():
  x = np.random.default_rng(0).standard_normal((10, 2))
  got = mixture_log_prob(x, np.zeros((1, 2)), 2.0)
  expected = -0.5 * (x ** 2).sum(1) / 4 - 2 * np.log(2.0) - np.log(2 * np.pi)
  np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_a_few_train_steps_lower_the_nll_on_digits():
  from genjax.data import Dataset  # pylint: disable=g-import-not-at-top
  config = flow_config.get_config('digits,smoke')
  config.optim.warmup_steps, config.optim.lr, config.train.num_steps = 1, 3e-3, 100
  data = Dataset(config.data, seed=0)
  family = flow.build(config, data.info)
  state = family.init(jax.random.PRNGKey(0), data.train_batch(0))
  batch = next(data.eval_batches('validation', max_batches=1))
  eval_fn = jax.jit(family.eval_step)
  before = eval_fn(state, batch, jax.random.PRNGKey(5))
  state = train(family, state, [data.train_batch(i) for i in range(20)], jax.random.PRNGKey(1))
  after = eval_fn(state, batch, jax.random.PRNGKey(5))
  assert after['nll'] / after['dims'] < before['nll'] / before['dims'] - 0.05
  # The tools agree: encode then decode gives the image back; samples are in range.
  x = batch['image'][:8].astype(np.float32) + 0.5
  z = family.tools['encode'](state, x)
  np.testing.assert_allclose(family.tools['decode'](state, z), x, atol=1e-3)
  images = family.sample(state, jax.random.PRNGKey(2), 4)['image']
  assert images.shape == (4, 8, 8, 1) and images.min() >= 0 and images.max() <= 16
