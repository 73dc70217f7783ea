"""The generic trainer on real (offline) data, with the AR family."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import ml_collections
import numpy as np
import pytest

from genjax import checkpoint, parallel, report, run, train
from genjax.data import Dataset
from genjax.errors import ConfigError
from tests.flags import ONE_DEVICE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def params_of(workdir, config):
  return run.experiment(config, workdir).start_state.params


def train_run(config, workdir):
  return train.train_and_evaluate(run.experiment(config, workdir)).metrics


def test_training_lowers_heldout_loss_on_digits(tmp_path, tiny_config):
  config = tiny_config('digits')
  config.train.num_steps = 60
  config.optim.lr = 3e-3
  config.evals.validation.every = 30
  ex = run.experiment(config, str(tmp_path / 'init'))
  before = ex.evaluate(parallel.replicate(ex.start_state), 'validation')
  after = train_run(config, str(tmp_path / 'run'))
  # A uniform model over 17 levels pays log(17) = 2.83 nats per pixel.
  assert before['nll_per_dim'] > 2.5
  assert after['validation']['nll_per_dim'] < before['nll_per_dim'] - 0.8, (before, after)
  assert after['test']['likelihood'] == 'exact'
  assert os.path.exists(tmp_path / 'run' / 'samples' / 'step_0000060.png')
  lines = [json.loads(l) for l in open(tmp_path / 'run' / 'metrics.jsonl')]
  # Validation every 30 steps (model selection), the test split once, at the end.
  assert [(l['step'], l['split']) for l in lines if l['split'] in ('validation', 'test')] == [
      (30, 'validation'), (60, 'test'), (60, 'validation')]
  assert any(f.startswith('events') for f in os.listdir(tmp_path / 'run' / 'tb'))
  step, _, (nll, _) = report.eval_curve(str(tmp_path / 'run'), 'validation')[-1]
  assert step == 60 and nll == pytest.approx(after['validation']['nll_per_dim'])


def test_resume_after_interruption_equals_uninterrupted(tmp_path, tiny_config, monkeypatch):
  config = tiny_config('pysrc')
  config.model.dropout = 0.1  # the keys must line up too
  config.evals = ml_collections.ConfigDict()  # what is compared is the state
  train_run(config, str(tmp_path / 'straight'))

  real = Dataset.train_batch

  def preempted(self, step):
    if step == 4:
      raise RuntimeError('simulated preemption')
    return real(self, step)

  monkeypatch.setattr(Dataset, 'train_batch', preempted)
  with pytest.raises(RuntimeError, match='simulated preemption'):
    train_run(config, str(tmp_path / 'resumed'))
  monkeypatch.setattr(Dataset, 'train_batch', real)
  assert checkpoint.Checkpointer(str(tmp_path / 'resumed'), config).latest_step == 3
  train_run(config, str(tmp_path / 'resumed'))

  # SIGTERM (preemption): the loop checkpoints where it is and returns.
  real_shard, calls = parallel.shard, []

  def shard_then_terminate(batch, *args, **kwargs):  # runs in the loop's thread, once per step
    calls.append(1)
    if len(calls) == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return real_shard(batch, *args, **kwargs)

  monkeypatch.setattr(parallel, 'shard', shard_then_terminate)
  out = train.train_and_evaluate(run.experiment(config, str(tmp_path / 'terminated')))
  monkeypatch.setattr(parallel, 'shard', real_shard)
  assert (out.stopped_by, out.step, out.metrics) == ('SIGTERM', 2, {})  # not a periodic save
  assert checkpoint.Checkpointer(str(tmp_path / 'terminated'), config).latest_step == out.step
  train_run(config, str(tmp_path / 'terminated'))

  # Ctrl-C between steps: saved where it is, then re-raised.
  def shard_then_interrupt(batch, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return real_shard(batch, *args, **kwargs)

  calls.clear()
  monkeypatch.setattr(parallel, 'shard', shard_then_interrupt)
  with pytest.raises(KeyboardInterrupt):
    train_run(config, str(tmp_path / 'ctrl_c'))
  monkeypatch.setattr(parallel, 'shard', real_shard)
  assert checkpoint.Checkpointer(str(tmp_path / 'ctrl_c'), config).latest_step == 1
  train_run(config, str(tmp_path / 'ctrl_c'))

  a = params_of(str(tmp_path / 'straight'), config)
  chex.assert_trees_all_equal(a, params_of(str(tmp_path / 'ctrl_c'), config))
  chex.assert_trees_all_equal(a, params_of(str(tmp_path / 'resumed'), config))
  chex.assert_trees_all_equal(a, params_of(str(tmp_path / 'terminated'), config))


def test_several_steps_per_call_equal_one_step_per_call(tmp_path, tiny_config, monkeypatch):
  config = tiny_config('pysrc')
  config.model.dropout = 0.1  # step i's key must be the one a single call gets
  config.train.num_steps, config.train.log_every, config.train.checkpoint_every = 11, 5, 6
  one = train_run(config, str(tmp_path / 'one'))
  calls = []
  real = parallel.train_steps

  def counted(step_fn, *args, **kwargs):
    fn = real(step_fn, *args, **kwargs)

    def call(state, batches, key, steps):
      calls.append([int(s) for s in steps])
      return fn(state, batches, key, steps)

    return call

  monkeypatch.setattr(parallel, 'train_steps', counted)
  config.train.steps_per_call = 3
  three = train_run(config, str(tmp_path / 'three'))
  # Boundaries after steps 5 (log), 6 (checkpoint), 10 (log), 11 (the last):
  # three steps per call only where none falls inside the call.
  assert calls == [[0, 1, 2], [6, 7, 8]]
  chex.assert_trees_all_equal(params_of(str(tmp_path / 'one'), config),
                              params_of(str(tmp_path / 'three'), config))
  assert one.keys() == three.keys()
  rows = {}
  for name in ('one', 'three'):
    lines = [json.loads(l) for l in open(tmp_path / name / 'metrics.jsonl')]
    rows[name] = [l for l in lines if l['split'] == 'train']
  assert [r['step'] for r in rows['one']] == [r['step'] for r in rows['three']] == [5, 6, 10, 11]
  for a, b in zip(rows['one'], rows['three']):
    assert a['loss'] == b['loss']
  assert checkpoint.Checkpointer(str(tmp_path / 'three'), config).latest_step == 11


def test_a_run_resumes_under_another_mesh_as_it_would_have_gone_on(tmp_path, tiny_config):
  """A checkpoint of the data-parallel run on 4 devices resumes with the state
  split over groups of 2 and over one group of 4 (mesh.fsdp), and in new
  processes with 1 and with 8 devices (8: as two groups of 4), and each ends
  where the uninterrupted run ends. The split runs' own last checkpoints (each
  split leaf written from its shards) restore replicated."""
  config = tiny_config('digits')
  config.evals = ml_collections.ConfigDict()  # what is compared is the state
  train_run(config, str(tmp_path / 'straight'))
  half = ml_collections.ConfigDict(config.to_dict())
  half.train.num_steps = 3
  train_run(half, str(tmp_path / 'half'))
  ends = {}
  for fsdp in (2, 4):
    shutil.copytree(tmp_path / 'half', tmp_path / f'fsdp{fsdp}')
    config.mesh.fsdp = fsdp
    ex = run.experiment(config, str(tmp_path / f'fsdp{fsdp}'))
    assert ex.step == 3
    ends[fsdp] = train.train_and_evaluate(ex).state.params
    assert ex.checkpointer.latest_step == 6
  config.mesh.fsdp = 1
  for fsdp in (2, 4):
    restored = run.experiment(config, str(tmp_path / f'fsdp{fsdp}')).start_state.params
    chex.assert_trees_all_equal(parallel.unreplicate(restored), ends[fsdp])
  for devices, fsdp in ((1, 1), (8, 4)):
    workdir = tmp_path / f'devices{devices}'
    shutil.copytree(tmp_path / 'half', workdir)
    env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} '
               + ONE_DEVICE)
    out = subprocess.run(
        [sys.executable, 'launch.py', '--config=experiments/autoregressive.py:digits,smoke',
         f'--workdir={workdir}', f'--config.train.num_steps={config.train.num_steps}',
         f'--config.train.checkpoint_every={config.train.checkpoint_every}',
         f'--config.mesh.fsdp={fsdp}'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f'{devices} device(s)' in out.stdout and 'resuming from step 3' in out.stdout, out.stdout
    ends[f'{devices} devices'] = params_of(str(workdir), config)
  straight = params_of(str(tmp_path / 'straight'), config)
  for where, params in ends.items():  # float sums in another order only (test_contract)
    chex.assert_trees_all_close(params, straight, rtol=1e-4, atol=5e-5, custom_message=str(where))
  config.mesh.fsdp = 3
  with pytest.raises(ConfigError, match='mesh.fsdp=3 must divide the 4 devices'):
    run.experiment(config, str(tmp_path / 'bad'))


def test_diverging_loss_stops_with_advice_and_saves_nothing_bad(tmp_path, tiny_config):
  config = tiny_config('digits')
  config.optim.lr, config.optim.warmup_steps, config.optim.grad_clip = 1e30, 0, 0.0
  with pytest.raises(FloatingPointError, match=r'loss is (nan|inf)(, grad_norm is (nan|inf))? at step 2; lower optim.lr'):
    train_run(config, str(tmp_path))
  # log_every=2 < checkpoint_every=3: the non-finite loss is caught before any save
  assert checkpoint.Checkpointer(str(tmp_path), config).latest_step is None


def run_launch(*args):
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)


def test_unknown_config_key_is_an_error(tmp_path):
  out = run_launch('--config=experiments/autoregressive.py:digits', f'--workdir={tmp_path}',
                   '--config.train.num_stepz=5')
  assert out.returncode != 0
  assert 'num_stepz' in out.stderr


def test_missing_dataset_is_one_clear_sentence(tmp_path):
  out = run_launch('--config=experiments/autoregressive.py:digits', f'--workdir={tmp_path}',
                   '--config.data.name=mnist', '--config.data.download=False',
                   f'--config.data.data_dir={tmp_path}/tfds')
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1].startswith("genjax: dataset 'mnist' is not prepared")
  assert 'Traceback' not in out.stderr


def test_unknown_variant_is_an_error(tmp_path):
  out = run_launch('--config=experiments/autoregressive.py:cifar', f'--workdir={tmp_path}')
  assert out.returncode != 0 and "unknown variant 'cifar'" in out.stderr


def test_launch_trains_then_samples_and_evaluates(tmp_path):
  common = ['--config=experiments/autoregressive.py:digits,smoke', f'--workdir={tmp_path}']
  out = run_launch(*common)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'final: {' in out.stdout and '"likelihood": "exact"' in out.stdout
  out = run_launch(*common, '--mode=eval', '--split=validation')
  assert out.returncode == 0 and 'eval on validation at step 4' in out.stdout, out.stderr[-2000:]
  out = run_launch(*common, '--mode=sample', '--config.sample.temperature=0')
  assert out.returncode == 0, out.stderr[-2000:]
  # The settings are in the file's name, so a second sample with others keeps the first.
  assert glob.glob(str(tmp_path / 'samples' / 'sample_step_0000004_*temperature=0*.png'))


def test_weight_decay_skips_biases_and_norms(tiny_config):
  from genjax import optim
  params = {'qkv': {'kernel': np.ones((4, 3, 2, 2)), 'bias': np.ones((3, 2, 2))},
            'ln': {'scale': np.ones(4), 'bias': np.ones(4)}, 'embed': {'embedding': np.ones((5, 4))}}
  mask = optim._decay_mask(params)
  assert mask == {'qkv': {'kernel': True, 'bias': False}, 'ln': {'scale': False, 'bias': False},
                  'embed': {'embedding': True}}


def test_a_damaged_latest_checkpoint_is_dropped_and_the_previous_one_resumes(
    tmp_path, tiny_config, capsys):
  config = tiny_config('digits')
  config.train.num_steps, config.train.checkpoint_every, config.train.keep_checkpoints = 6, 2, 2
  config.evals = type(config.evals)()  # no evaluators: only the state matters here
  train_run(config, str(tmp_path / 'straight'))
  train_run(config, str(tmp_path / 'damaged'))
  # A crash in the middle of writing step 6: its largest file loses its second half.
  files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / 'damaged' / 'checkpoints' / '6')
           for f in fs]
  largest = max(files, key=os.path.getsize)
  with open(largest, 'r+b') as f:
    f.truncate(os.path.getsize(largest) // 2)
  capsys.readouterr()
  ex = run.experiment(config, str(tmp_path / 'damaged'))
  assert 'checkpoint 6 in' in capsys.readouterr().out and ex.step == 4
  assert checkpoint.Checkpointer(str(tmp_path / 'damaged'), config).latest_step == 4
  train.train_and_evaluate(ex)  # steps 5 and 6 again
  chex.assert_trees_all_equal(params_of(str(tmp_path / 'straight'), config),
                              params_of(str(tmp_path / 'damaged'), config))


def test_a_checkpoint_that_fits_no_state_of_this_config_is_refused_in_one_sentence(
    tmp_path, tiny_config):
  config = tiny_config('digits')
  written = checkpoint.Checkpointer(str(tmp_path), config)
  written.maybe_save(1, lambda: {'w': np.zeros((3, 2), np.float32)}, force=True)
  written.close()
  reader = checkpoint.Checkpointer(str(tmp_path), config, layout=parallel.state_shardings)
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r"checkpoint 1 in .* does not fit this config's state \(.+\); use a new"):
    reader.restore_or({'w': jax.ShapeDtypeStruct((4, 2), np.float32)})
  assert reader.latest_step == 1  # refused, not deleted as damaged


def test_likelihood_intervals_come_from_the_spread_over_batches():
  # Four batches of equal size: the ratio estimator's half-width is 1.96 standard
  # errors of the mean of the per-batch NLL per dimension.
  per_dim = np.array([1.0, 1.2, 0.9, 1.3])
  batches = [{'nll': 10 * v, 'dims': 10.0, 'examples': 2.0} for v in per_dim]
  total = {k: sum(b[k] for b in batches) for k in batches[0]}
  out = train.summarize(total, 'bound', batches)
  half = 1.96 * per_dim.std(ddof=1) / np.sqrt(4)
  assert out['nll_per_dim'] == pytest.approx(per_dim.mean())
  assert out['nll_per_dim_hi'] - out['nll_per_dim'] == pytest.approx(half)
  assert out['bpd_lo'] == pytest.approx((per_dim.mean() - half) / np.log(2))
  same = [{'nll': 10.0, 'dims': 10.0, 'examples': 2.0}] * 4
  assert train.summarize({'nll': 40.0, 'dims': 40.0, 'examples': 8.0}, 'bound', same)['bpd_lo'] \
      == pytest.approx(1 / np.log(2))
  assert 'bpd_lo' not in train.summarize(total, 'bound', batches[:1])  # one batch: no interval
  assert 'bpd_lo' not in train.summarize(total, 'none', batches)


def test_profile_steps_write_a_trace_of_those_steps(tmp_path, tiny_config):
  config = tiny_config('digits')
  config.train.profile_steps = '2,4'
  train_run(config, str(tmp_path))
  traces = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / 'profile') for f in fs
            if f.endswith('.xplane.pb')]
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0, traces
  for bad in ('4,2', '3', 'a,b', '-1,2'):
    config.train.profile_steps = bad
    with pytest.raises(ConfigError, match=r"train.profile_steps=.*give 'A,B'"):
      train_run(config, str(tmp_path / 'bad'))


def wandb_history(path):
  """The logged rows of an offline wandb run file (its record log: 32 KiB blocks of
  7-byte-headed chunks, each record a protobuf `Record`)."""
  import struct  # pylint: disable=g-import-not-at-top
  from wandb.proto import wandb_internal_pb2  # pylint: disable=g-import-not-at-top
  data, rows, pos, buf, block = open(path, 'rb').read(), [], 7, b'', 2 ** 15
  while pos + 7 <= len(data):
    if block - pos % block < 7:
      pos += block - pos % block  # the block's tail is padding
      continue
    _, length, kind = struct.unpack('<IHB', data[pos:pos + 7])
    if (length == 0 and kind == 0) or pos + 7 + length > len(data):
      break  # the end, or a record still being written
    buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
    if kind in (1, 4):  # a whole record, or a record's last chunk
      record = wandb_internal_pb2.Record.FromString(buf)
      buf = b''
      if record.WhichOneof('record_type') == 'history':
        rows.append({i.key or '/'.join(i.nested_key): json.loads(i.value_json)
                     for i in record.history.item})
  return rows


def test_wandb_offline_logs_what_metrics_jsonl_holds_and_a_resume_continues_it(
    tmp_path, tiny_config):
  config = tiny_config('digits')
  config.train.log_every = 2
  config.log.wandb, config.log.wandb_mode = 'genjax-test', 'offline'
  workdir = str(tmp_path / 'w')
  train_run(config, workdir)
  config.train.num_steps = 8  # a second run resumes from step 6
  train_run(config, workdir)
  runs = sorted(glob.glob(os.path.join(workdir, 'wandb', 'offline-run-*', 'run-*.wandb')))
  assert len(runs) == 2 and len({os.path.basename(r) for r in runs}) == 1, runs  # one run id
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    train = [json.loads(line) for line in f if '"train"' in line]
  assert train[0]['step'] < 6 < train[-1]['step'] == 8, train  # both runs logged
  expected = {(r['step'], f'train/{k}'): v for r in train for k, v in r.items()
              if k not in ('step', 'split', 'time')}
  for _ in range(60):  # wandb's service may still be writing the last rows to disk
    logged = {(row['step'], k): v for r in runs for row in wandb_history(r)
              for k, v in row.items() if k.startswith('train/')}
    if expected.keys() <= logged.keys():
      break
    time.sleep(0.5)
  assert expected.keys() <= logged.keys(), sorted(expected.keys() - logged.keys())
  for key, v in expected.items():
    assert logged[key] == pytest.approx(v, rel=1e-6), key
  config.log.wandb_mode = 'offlne'
  with pytest.raises(ConfigError, match=r"log.wandb_mode='offlne'"):
    train_run(config, str(tmp_path / 'bad'))


def test_a_bad_profile_range_is_one_sentence_and_writes_nothing(tmp_path):
  out = run_launch('--config=experiments/autoregressive.py:digits,smoke', f'--workdir={tmp_path}/w',
                   '--config.train.profile_steps=5,2')
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1].startswith('genjax: bad config: train.profile_steps')
  assert 'Traceback' not in out.stderr and not os.path.exists(tmp_path / 'w')
