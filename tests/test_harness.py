"""The harness without any registered family: a family written here trains
through genjax.run, and the shared pieces (evaluators, writers, update helper)
do what they say."""
import dataclasses
import json
import math
import os

import flax
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax
import pytest

from genjax.experiments import common
from genjax import families, parallel, run, writers
from genjax import train as train_lib
from genjax.evals import modes
from genjax.families import base


@flax.struct.dataclass
class GaussState:
  step: jnp.ndarray
  params: dict
  opt_state: optax.OptState


def build_gaussian(config, info):
  """A diagonal Gaussian fitted by maximum likelihood: the smallest family."""
  D = info.shape[0]
  tx = optax.adam(config.optim.lr)

  def nll_B(params, x_BxD):
    log_std = params['log_std']
    z = (x_BxD - params['mean']) * jnp.exp(-log_std)
    return (0.5 * z ** 2 + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)

  def init(rng, batch):
    del rng, batch
    params = {'mean': jnp.zeros(D), 'log_std': jnp.zeros(D)}
    return GaussState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  def train_step(state, batch, rng):
    del rng
    params, opt_state, metrics, _ = base.update(lambda p: nll_B(p, batch['x']).mean(),
                                                state.params, state.opt_state, tx)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def eval_step(state, batch, rng):
    del rng
    mask = batch['mask'].astype(jnp.float32)
    return dict(nll=(nll_B(state.params, batch['x']) * mask).sum(), dims=mask.sum() * D,
                examples=mask.sum())

  def sample(state, rng, num_samples):
    eps = jax.random.normal(rng, (num_samples, D))
    return {'x': np.asarray(state.params['mean'] + jnp.exp(state.params['log_std']) * eps)}

  return base.Family(name='gaussian', init=init, train_step=train_step, eval_step=eval_step,
                     sample=sample, likelihood='exact')


def gaussian_config():
  c = common.base('gaussian', 'toy2d/ring8', batch_size=256, num_steps=300, eval_split='test')
  c.model = ml_collections.ConfigDict(dict(kind='diagonal'))
  c.optim.lr = 0.05
  c.train.log_every = 50
  c.train.checkpoint_every = 300
  c.train.progress_bar = False
  c.data.eval_batch_size = 2048
  c.evals.test = ml_collections.ConfigDict(dict(kind='likelihood', split='test', every=150))
  c.evals.modes = ml_collections.ConfigDict(dict(kind='modes', every=0, num_samples=2500))
  c.evals.samples.num_samples = 500
  return c


def test_an_unregistered_family_trains_through_run_to_the_mle(tmp_path):
  assert 'gaussian' not in families.REGISTRY
  config = gaussian_config()
  final = run.main(config, str(tmp_path), build_family=build_gaussian)
  # ring8 in closed form: a uniform mixture of 8 points on the unit circle plus
  # N(0, 0.01^2): mean 0 and variance 1/2 + 0.01^2 per coordinate. The MLE
  # Gaussian pays the Gaussian entropy 0.5 log(2 pi e var) per dimension.
  var = 0.5 + 0.01 ** 2
  best = 0.5 * math.log(2 * math.pi * math.e * var)
  assert final['test']['nll_per_dim'] == pytest.approx(best, abs=0.02)
  assert final['test']['likelihood'] == 'exact'
  # A Gaussian puts almost no samples within 3 std (0.03) of a mode.
  assert final['modes']['high_quality'] < 0.05 and final['modes']['num_modes'] == 8
  records = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert [r['step'] for r in records if r['split'] == 'test'] == [150, 300]
  assert os.path.exists(tmp_path / 'samples' / 'step_0000300.png')
  assert np.load(tmp_path / 'samples' / 'step_0000300.npy').shape == (500, 2)


def test_a_diverging_metric_names_itself_and_the_family_advice(tmp_path):
  config = gaussian_config()
  config.optim.lr = float('nan')
  config.train.num_steps = 4
  with pytest.raises(FloatingPointError, match=r'loss is nan(, grad_norm is nan)? at step 4; lower optim.lr'):
    run.main(config, str(tmp_path), build_family=build_gaussian)


def test_a_nan_gradient_with_a_finite_loss_stops_the_run(tmp_path):
  def build(config, info):
    family = build_gaussian(config, info)
    tx = optax.adam(config.optim.lr)

    def train_step(state, batch, rng):
      del rng
      # sqrt(0 * m) is 0, but its gradient at 0 is 0 * inf = NaN.
      loss = lambda p: jnp.sqrt(0.0 * p['mean'] ** 2).sum() + p['log_std'].sum() ** 2
      params, opt_state, metrics, _ = base.update(loss, state.params, state.opt_state, tx)
      return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return dataclasses.replace(family, train_step=train_step)

  config = gaussian_config()
  config.train.num_steps, config.train.log_every = 4, 2
  with pytest.raises(FloatingPointError, match=r'grad_norm is nan at step 2;.*no checkpoint'):
    run.main(config, str(tmp_path), build_family=build)


def test_mode_stats_on_hand_made_points():
  centers = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  std = 0.01
  on_all = np.repeat(centers, 5, 0) + 0.02  # within 3 std (0.03) of their mode
  stats = modes.mode_stats(on_all, centers, std)
  assert (stats['modes'], stats['high_quality']) == (4, 1.0)
  assert stats['kl_uniform'] == pytest.approx(0.0, abs=1e-12)
  one = np.repeat(centers[:1], 10, 0)
  stats = modes.mode_stats(one, centers, std)
  assert (stats['modes'], stats['high_quality']) == (1, 1.0)
  assert stats['kl_uniform'] == pytest.approx(math.log(4))  # all mass on one of 4 modes
  off = np.concatenate([one, np.full((10, 2), 0.5)])  # 10 points between the modes
  stats = modes.mode_stats(off, centers, std)
  assert (stats['modes'], stats['high_quality']) == (1, 0.5)
  just_out = centers[:1] + np.array([[0.031, 0.0]])
  assert modes.mode_stats(just_out, centers, std)['modes'] == 0


def test_image_grid_checks_the_range_and_puts_a_class_per_row():
  images = np.linspace(-1, 1, 6 * 2 * 2).reshape(6, 2, 2, 1)
  grid = writers.image_grid(images, (-1, 1), scale=1)
  assert grid.min() == 0 and grid.max() == 255
  with pytest.raises(ValueError, match=r'outside their stated range \[0, 16\]'):
    writers.image_grid(images, (0, 16))
  with pytest.raises(ValueError, match='NaN'):
    writers.image_grid(np.full((1, 2, 2, 1), np.nan), (0, 1))
  labels = np.array([2, 0, 2, 1, 0, 2])
  value = np.arange(6, dtype=np.float32)[:, None, None, None] * np.ones((6, 2, 2, 1)) / 5
  grid = writers.image_grid(value, (0, 1), scale=1, rows_of=labels)
  # 3 classes -> 3 rows of (2 + 1) pixels plus the border; 3 columns (class 2 has 3).
  assert grid.shape == (3 * 3 + 1, 3 * 3 + 1, 1)
  cell = lambda r, c: grid[1 + 3 * r, 1 + 3 * c, 0]
  assert [cell(0, 0), cell(0, 1)] == [round(255 * 1 / 5), round(255 * 4 / 5)]  # class 0
  assert [cell(2, 0), cell(2, 1), cell(2, 2)] == [0, round(255 * 2 / 5), 255]  # class 2


def _per_device(fn, devices, in_specs=P(base.DATA_AXIS)):
  """fn mapped over `devices` as genjax.parallel maps a step, its outputs
  concatenated along their first axis (one entry per device)."""
  return jax.jit(jax.shard_map(fn, mesh=parallel.mesh(devices), in_specs=in_specs,
                               out_specs=P(base.DATA_AXIS), check_vma=False))


def test_update_averages_gradients_and_aux_over_devices():
  from conftest import cpu_devices  # pylint: disable=g-import-not-at-top
  devices = cpu_devices(2)
  tx = optax.sgd(1.0)
  params = {'w': jnp.zeros(())}

  def step(x):
    loss_fn = lambda p: (((p['w'] - x) ** 2).mean(), {'stat': x.mean()})
    new, _, metrics, aux = base.update(loss_fn, params, tx.init(params), tx, has_aux=True,
                                       prefix='g_')
    return jax.tree_util.tree_map(lambda v: v[None], (new, metrics, aux))  # a device axis

  x = jnp.array([[1.0], [3.0]])  # device 0 sees 1, device 1 sees 3
  new, metrics, aux = _per_device(step, devices)(x)
  # d/dw of (w - x)^2 at 0 is -2x; the mean over devices is -4, so w = 4.
  np.testing.assert_allclose(new['w'], [4.0, 4.0])
  np.testing.assert_allclose(aux['stat'], [2.0, 2.0])
  assert set(metrics) == {'g_loss', 'g_grad_norm', 'g_param_norm', 'g_update_norm'}
  np.testing.assert_allclose(metrics['g_loss'], [5.0, 5.0])


def test_example_keys_do_not_depend_on_the_device_split():
  from conftest import cpu_devices  # pylint: disable=g-import-not-at-top
  devices = cpu_devices(4)
  rng = jax.random.PRNGKey(3)
  def draw(n, devices):
    per_device = lambda x_B, r: x_B + jax.vmap(lambda k: jax.random.normal(k, ()))(
        base.example_keys(r, n))
    return _per_device(per_device, devices, in_specs=(P(base.DATA_AXIS), P()))(
        np.zeros(len(devices) * n, np.float32), rng)

  one, four = draw(8, devices[:1]), draw(2, devices)
  np.testing.assert_array_equal(one, four)
  assert len(np.unique(np.asarray(four))) == 8


def test_ema_warm_up_forgets_the_initialisation():
  """With the step, the decay is min(decay, (1 + t) / (10 + t)): after the first
  update the average is mostly the new parameters; later the nominal decay rules."""
  init, new = {'w': jnp.zeros(3)}, {'w': jnp.ones(3)}
  np.testing.assert_allclose(base.ema(init, new, 0.999, step=0)['w'], 0.9, rtol=1e-6)
  np.testing.assert_allclose(base.ema(init, new, 0.999)['w'], 0.001, rtol=1e-4)
  np.testing.assert_allclose(base.ema(init, new, 0.999, step=10 ** 6)['w'], 0.001, rtol=1e-4)
  # 600 updates of a 0.999 average towards 1: without warm-up 45% is still the init.
  avg_plain, avg_warm = init, init
  for t in range(600):
    avg_plain, avg_warm = base.ema(avg_plain, new, 0.999), base.ema(avg_warm, new, 0.999, step=t)
  assert float(avg_plain['w'][0]) == pytest.approx(1 - 0.999 ** 600, rel=1e-4)  # 0.45
  assert float(avg_warm['w'][0]) > 0.9


def build_peaking(config, info):
  """The Gaussian, with an evaluation that is best at step 6 whatever was learnt."""
  family = build_gaussian(config, info)

  def eval_step(state, batch, rng):
    sums = family.eval_step(state, batch, rng)
    sums['nll'] = (state.step.astype(jnp.float32) - 6.0) ** 2 * sums['dims']
    sums['batches'] = jnp.ones(())  # summed over the batches and devices evaluated
    return sums

  return dataclasses.replace(family, eval_step=eval_step)


def test_the_model_selected_on_validation_is_the_one_tested_and_returned(tmp_path):
  def config(num_steps):
    c = gaussian_config()
    c.train.num_steps = num_steps
    c.train.checkpoint_every = 0
    c.evals = ml_collections.ConfigDict()
    # Validation at 2, 4, ... on 2 of its batches; the test at the end.
    common.likelihood_evals(c, every=2, max_batches=2)
    c.data.eval_batch_size = 512
    c.train.select = 'validation/nll_per_dim'
    return c

  def train(c, workdir):
    result = train_lib.train_and_evaluate(run.experiment(c, str(workdir),
                                                         build_family=build_peaking))
    return int(result.state.step), result.metrics

  step, final = train(config(10), tmp_path / 'whole')
  assert final['selected'] == {'step': 6, 'value': 0.0, 'metric': 'validation/nll_per_dim'}
  assert final['validation']['nll_per_dim'] == 16.0  # the last step's own validation
  assert final['test']['nll_per_dim'] == 0.0  # the test split saw step 6
  assert step == 6  # the returned state is the selected one
  # Every checkpoint, the last one too, was measured on the same 2 batches.
  with open(tmp_path / 'whole' / 'metrics.jsonl') as f:
    rows = [r for r in map(json.loads, f) if r['split'] == 'validation']
  assert [r['step'] for r in rows] == [2, 4, 6, 8, 10]
  subset = 2 * jax.local_device_count() / 1024  # the whole split: 20 batches of 10,000
  assert [r['batches'] for r in rows] == [subset] * 5
  # Interrupted after step 7 and resumed: the selection survives in the workdir.
  _, first = train(config(7), tmp_path / 'resumed')
  assert first['selected']['step'] == 6 and first['test']['nll_per_dim'] == 0.0
  step, final = train(config(10), tmp_path / 'resumed')
  assert final['selected']['step'] == 6 and final['test']['nll_per_dim'] == 0.0 and step == 6
  # launch.py --mode=eval evaluates the selected model too, and leaves the
  # training run's config.json as it was, whatever its own settings.
  record = (tmp_path / 'resumed' / 'config.json').read_text()
  c = config(10)
  c.data.eval_batch_size = 256
  assert run.main(c, str(tmp_path / 'resumed'), mode='eval',
                  build_family=build_peaking)['nll_per_dim'] == 0.0
  assert (tmp_path / 'resumed' / 'config.json').read_text() == record
  c = config(4)
  c.train.select = 'valdation/bpd'
  with pytest.raises(ValueError, match="train.select='valdation/bpd'"):
    train(c, tmp_path / 'typo')
