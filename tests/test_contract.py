"""The spine's guarantees, checked for every registered family on its own
smoke config (`experiments/<family>.py:<default>,smoke`): a family gets these
tests by registering in genjax.families.REGISTRY."""
import importlib
import inspect
import os
import subprocess
import sys

import chex
import jax
import ml_collections
import numpy as np
import pytest

from conftest import cpu_devices
from genjax import checkpoint, families, parallel, run, train
from genjax.data import Dataset
from genjax.errors import DivergedError

FAMILIES = sorted(families.REGISTRY)
DATA_KEY = {'image': 'image', 'text': 'tokens', 'points': 'x'}


def smoke_config(name, evals=True):
  module = importlib.import_module(f'genjax.experiments.{name}')
  default = inspect.signature(module.get_config).parameters['arg'].default
  config = module.get_config(f'{default},smoke')
  assert config.family == name
  if not evals:  # what is checked is the state; evaluators would only compile more
    config.evals = ml_collections.ConfigDict()
  return config


def on_transformer(config):
  """A U-Net family's config on its DiT, for tests of what spans devices or
  hosts (the state, the batch) rather than of the network: its steps compile
  in less time."""
  if config.model.get('net') == 'unet':
    config.model.net = 'dit'
  return config


# The U-Net is one module that more than one family trains (flow matching
# shares diffusion's): its split over devices is checked on the first of them,
# and the others take their transformer in that test.
UNET_SPLIT = next((n for n in FAMILIES if smoke_config(n).model.get('net') == 'unet'), None)


def build(name, no_dropout=False, transformer=False):
  config = smoke_config(name)
  if no_dropout:  # dropout masks are drawn per device (base.device_key), not per example
    for key in config.model.keys():
      if 'dropout' in key:
        config.model[key] = 0.0
  if transformer:
    on_transformer(config)
  data = Dataset(config.data, seed=config.seed)
  return config, data, families.build(config, data.info)


def run_steps(family, data, devices, num_steps=3, fsdp=1):
  """`num_steps` data-parallel steps over `devices` from the same init; one trace only.
  Also returns the step, to run it further without another compile."""
  state = family.init(jax.random.PRNGKey(0), data.train_batch(0))
  chex.clear_trace_counter()
  step = parallel.train_step(chex.assert_max_traces(family.train_step, n=1), devices, fsdp)
  rstate = parallel.replicate(state, devices, fsdp)
  for s in range(num_steps):
    rstate, metrics = step(rstate, parallel.shard(data.train_batch(s), devices, fsdp),
                           jax.random.PRNGKey(s))
  return state, rstate, parallel.unreplicate(metrics), step


def poison_params(state):
  """The first tensor of each trained parameter tree (`params`, `g_params`, ...;
  not EMA copies or optimizer moments) filled with NaN."""
  done = set()

  def poison(path, x):
    names = [str(getattr(k, 'name', getattr(k, 'key', ''))) for k in path]
    tree = names[0]
    if tree.endswith('params') and 'ema' not in tree and tree not in done:
      done.add(tree)
      return x * np.nan
    return x

  out = jax.tree_util.tree_map_with_path(poison, state)
  assert done, 'no parameters found in the state'
  return out


def leaves_finite(tree):
  return all(np.all(np.isfinite(np.asarray(x, np.float64)))
             for x in jax.tree_util.tree_leaves(tree) if np.issubdtype(np.asarray(x).dtype, np.number))


@pytest.mark.parametrize('name', FAMILIES)
def test_init_train_eval_sample_shapes_and_finiteness(name, tmp_path):
  config, data, family = build(name)
  devices = cpu_devices(1)
  state, rstate, metrics, step = run_steps(family, data, devices, num_steps=2)
  after = parallel.unreplicate(rstate)
  assert int(state.step) == 0 and int(after.step) == 2
  chex.assert_trees_all_equal_shapes_and_dtypes(state, after)
  assert leaves_finite(after)
  assert family.headline in metrics and set(family.finite) <= set(metrics)
  assert all(np.shape(v) == () and np.isfinite(v) for v in metrics.values()), metrics

  batch = next(data.eval_batches(max_batches=1))
  p_eval = parallel.eval_step(family.eval_step, devices=devices)
  sums = parallel.unreplicate(p_eval(rstate, parallel.shard(batch, devices), jax.random.PRNGKey(0)))
  assert float(sums['examples']) == batch['mask'].sum()
  assert leaves_finite(sums)
  if family.likelihood != 'none':
    assert float(sums['nll']) > 0 and float(sums['dims']) > 0

  samples = family.sample(after, jax.random.PRNGKey(1), 4)
  x = np.asarray(samples[DATA_KEY[data.info.modality]])
  assert x.shape[0] == 4 and leaves_finite(x)
  if data.info.modality != 'text':
    assert x.shape[1:] == tuple(data.info.shape)
  if data.info.modality == 'image':
    lo, hi = data.info.value_range
    assert lo <= x.min() and x.max() <= hi
  if 'label' in samples:
    labels = np.asarray(samples['label'])
    assert labels.shape == (4,) and 0 <= labels.min() and labels.max() < data.info.num_classes

  # A NaN in any network's parameters is caught by what the trainer checks (the
  # family's finite metrics, gradient and parameter norms), naming the metric.
  _, bad = step(poison_params(rstate), parallel.shard(data.train_batch(2), devices), jax.random.PRNGKey(2))
  mean = {k: float(v) for k, v in parallel.unreplicate(bad).items()}
  ckpt = checkpoint.Checkpointer(str(tmp_path), config, family.state_fields)
  with pytest.raises(DivergedError, match=r'\w+ is (nan|inf).* at step 3; .*no checkpoint was saved'):
    train._check_finite(mean, family, 3, ckpt)  # pylint: disable=protected-access
  ckpt.close()


def assert_same_training(m1, one, m2, two):
  # Per-example noise comes from base.example_keys, so the split does not matter;
  # only the order of float sums differs. A parameter whose gradient is at
  # rounding level (a zero-initialised output bias) still gets an Adam step of
  # up to lr in either direction, so parameters agree to 5e-5 absolute: far
  # below the ~lr (1e-3) that a different draw of noise or batch would give.
  chex.assert_trees_all_close(m1, m2, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(parallel.unreplicate(one), parallel.unreplicate(two),
                              rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize('name', FAMILIES)
def test_four_devices_match_one(name):
  """The batch split four ways trains as one device does: over four devices
  (data parallel), over two groups of two that split the state (mesh.fsdp=2),
  and on one device as four microbatches whose gradients are accumulated
  (train.microbatches=4). A family on the U-Net that another family already
  checks here runs on its transformer (UNET_SPLIT)."""
  devices = cpu_devices(4)
  config, data, family = build(name, no_dropout=True, transformer=name != UNET_SPLIT)
  _, one, m1, _ = run_steps(family, data, devices[:1])
  _, four, m4, _ = run_steps(family, data, devices)
  assert_same_training(m1, one, m4, four)
  _, split, m22, _ = run_steps(family, data, devices, fsdp=2)
  assert_same_training(m1, one, m22, split)
  held = lambda r: parallel.state_bytes(r, devices[0])
  assert held(split) < 0.6 * held(four), (held(split), held(four))
  config.train.microbatches = 4
  _, accumulated, m_acc, _ = run_steps(families.build(config, data.info), data, devices[:1])
  assert_same_training(m1, one, m_acc, accumulated)


def test_eight_devices_as_two_groups_of_four_match_one():
  """8 CPU devices (a process of their own: this one has 4), mesh.fsdp=4: every
  family trains as on one device (tests/eight_devices_worker.py)."""
  worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'eight_devices_worker.py')
  out = subprocess.run([sys.executable, worker], capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
  assert out.stdout.count('train as 1') == len(FAMILIES), out.stdout


@pytest.mark.parametrize('name', ['autoregressive', 'gan'])
def test_fsdp_over_four_devices_holds_a_quarter_and_trains_as_one(name):
  """mesh.fsdp=4 on four devices: one group, each device holding about a
  quarter of the state (the leaves no axis of which 4 divides stay whole)."""
  devices = cpu_devices(4)
  config, data, family = build(name, no_dropout=True)
  _, one, m1, _ = run_steps(family, data, devices[:1])
  _, quarter, m4, _ = run_steps(family, data, devices, fsdp=4)
  assert_same_training(m1, one, m4, quarter)
  ratio = parallel.state_bytes(quarter, devices[0]) / parallel.state_bytes(one, devices[0])
  assert 0.24 < ratio < 0.3, ratio
  sizes = {x.addressable_shards[0].data.size / x.size for x in jax.tree_util.tree_leaves(quarter)}
  assert sizes <= {0.25, 1.0} and 0.25 in sizes, sizes


def _curve(name, dtype, steps):
  """The family's train metrics over `steps` steps on one device, its smoke
  model at `dtype`, on digits where it models images (else its own data)."""
  module = importlib.import_module(f'genjax.experiments.{name}')
  config = (module.get_config('digits,smoke') if 'digits' in getattr(module, 'VARIANTS', ())
            else smoke_config(name))
  config.model.dtype = dtype
  config.train.num_steps = steps  # the learning-rate schedule spans the run
  data = Dataset(config.data, seed=config.seed)
  family = families.build(config, data.info)
  devices = cpu_devices(1)
  state = family.init(jax.random.PRNGKey(0), data.train_batch(0))
  step = parallel.train_step(family.train_step, devices)
  rstate, metrics = parallel.replicate(state, devices), []
  # The program the steps run, as XLA receives it (a lowering of the trace they made).
  program = step.lower(rstate, parallel.shard(data.train_batch(0), devices),
                       jax.random.PRNGKey(0)).as_text()
  for s in range(steps):
    rstate, m = step(rstate, parallel.shard(data.train_batch(s), devices), jax.random.PRNGKey(s))
    metrics.append(m)
  return family, parallel.unreplicate(rstate), parallel.unreplicate(metrics), program


@pytest.mark.parametrize('name', FAMILIES)
def test_bfloat16_trains_as_float32_does(name):
  """model.dtype=bfloat16 computes in bfloat16 and keeps the parameters and
  optimizer state in float32. Over 100 steps no metric is NaN, and the loss
  curve stays within 5% of float32's: the mean of the headline metric over
  each stretch of 20 steps."""
  family, _, f32, f32_program = _curve(name, 'float32', 100)
  _, state, bf16, bf16_program = _curve(name, 'bfloat16', 100)
  assert 'bf16' in bf16_program and 'bf16' not in f32_program
  floats = [x for x in jax.tree_util.tree_leaves(state) if np.issubdtype(x.dtype, np.floating)]
  assert floats and all(x.dtype == np.float32 for x in floats)
  assert leaves_finite(state)
  for m in bf16:
    assert all(np.isfinite(m[k]) for k in family.finite), m
  curve = lambda ms: np.asarray([m[family.headline] for m in ms], np.float64).reshape(5, 20).mean(1)
  a, b = curve(f32), curve(bf16)
  assert np.all(np.abs(b - a) <= 0.05 * np.abs(a)), (family.headline, a, b)


@pytest.mark.parametrize('name', FAMILIES)
def test_resumed_run_equals_uninterrupted(name, tmp_path, monkeypatch):
  config = smoke_config(name, evals=False)
  config.deterministic = True  # a GPU needs it for bitwise equality; conftest sets the flag
  straight = train.train_and_evaluate(run.experiment(config, str(tmp_path / 'straight')))

  real = Dataset.train_batch

  def preempted(self, step):
    if step == 3:
      raise RuntimeError('simulated preemption')
    return real(self, step)

  monkeypatch.setattr(Dataset, 'train_batch', preempted)
  with pytest.raises(RuntimeError, match='simulated preemption'):
    train.train_and_evaluate(run.experiment(config, str(tmp_path / 'resumed')))
  monkeypatch.setattr(Dataset, 'train_batch', real)
  resumed = run.experiment(config, str(tmp_path / 'resumed'))
  assert resumed.step == 2  # the checkpoint before the preemption
  chex.assert_trees_all_equal(straight.state, train.train_and_evaluate(resumed).state)


def _first_int_field(config, dotted):
  node = config
  for key in dotted.split('.'):
    node = node[key]
  if not hasattr(node, 'keys'):
    return dotted, node
  for key in sorted(node.keys()):
    value = node[key]
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
      return f'{dotted}.{key}', value
  pytest.fail(f'no positive int field under {dotted} to change')


@pytest.mark.parametrize('name', FAMILIES)
def test_checkpoint_from_another_config_is_refused(name, tmp_path):
  config = smoke_config(name, evals=False)
  ex = run.experiment(config, str(tmp_path))
  # The check reads the config beside the checkpoints, before any restore: the
  # initial state, saved as step 0, is checkpoint enough (no train step to compile).
  ex.checkpointer.maybe_save(0, lambda: ex.start_state, force=True)
  ex.checkpointer.close()
  same = run.experiment(config, str(tmp_path))  # the same config resumes from it
  assert same.checkpointer.latest_step == 0
  same.checkpointer.close()
  field, value = _first_int_field(config, ex.family.state_fields[0])
  *parents, leaf = field.split('.')
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value * 2
  with pytest.raises(checkpoint.CheckpointMismatchError, match=parents[0] if parents else leaf):
    run.experiment(config, str(tmp_path))
