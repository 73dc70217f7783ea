"""Offline TFDS builders and the input pipeline."""
import hashlib
import os
import jax
import ml_collections
import numpy as np
import pytest

from genjax.data import builders, pipeline


def data_cfg(name, **kw):
  c = ml_collections.ConfigDict(dict(name=name, data_dir='', download=True, train_split='train',
                                     eval_split='test', seq_len=16, batch_size=16,
                                     eval_batch_size=64))
  c.update(kw)
  return c


def test_digits_split_follows_load_digits_order():
  from sklearn.datasets import load_digits
  images = load_digits().images
  ds = pipeline.Dataset(data_cfg('digits'))
  assert ds.info.num_examples == {'train': 1000, 'validation': 350, 'test': 447}
  assert ds.info.shape == (8, 8, 1) and ds.info.num_levels == 17 and ds.info.value_range == (0, 16)
  test = ds._sources['test']
  assert [test[i]['index'] for i in (0, 446)] == [1350, 1796]
  np.testing.assert_array_equal(test[0]['image'][..., 0], images[1350])


def test_eval_pass_sees_every_example_once():
  ds = pipeline.Dataset(data_cfg('digits', eval_batch_size=64))
  batches = list(ds.eval_batches('test'))
  assert len(batches) == 7 and all(b['image'].shape == (64, 8, 8, 1) for b in batches)
  assert sum(int(b['mask'].sum()) for b in batches) == 447
  from sklearn.datasets import load_digits
  got = np.concatenate([b['image'][b['mask']] for b in batches])[..., 0]
  np.testing.assert_array_equal(got, load_digits().images[1350:].astype(np.uint8))


def test_train_batches_are_a_pure_function_of_step_and_cover_an_epoch():
  ds = pipeline.Dataset(data_cfg('digits', batch_size=40))
  again = pipeline.Dataset(data_cfg('digits', batch_size=40))
  np.testing.assert_array_equal(ds.train_batch(7)['image'], again.train_batch(7)['image'])
  assert not np.array_equal(ds.train_batch(7)['image'], ds.train_batch(8)['image'])
  # 25 batches of 40 = one epoch of 1000: each training image exactly once
  epoch = np.concatenate([ds.train_batch(s)['image'] for s in range(25)]).reshape(1000, -1)
  train = np.stack([ds._sources['train'][i]['image'] for i in range(1000)]).reshape(1000, -1)
  assert sorted(map(bytes, epoch)) == sorted(map(bytes, train))
  it = ds.train_iter(3)
  np.testing.assert_array_equal(next(it)['image'], ds.train_batch(3)['image'])
  it.close()


def test_a_decoded_split_is_kept_and_read_back_the_same(monkeypatch):
  """Small splits are decoded once: later Datasets, here or in another process,
  read the arrays that the records decode to; a stale file is decoded again."""
  cfg = data_cfg('digits', batch_size=40)
  monkeypatch.setattr(pipeline, '_DECODED', pipeline.collections.OrderedDict())
  ds = pipeline.Dataset(cfg)
  lo, hi = pipeline._host_range(1000)
  path = os.path.join(ds._builder.data_dir, f'genjax_decoded.train.{lo}-{hi}.npz')
  if os.path.exists(path):
    os.remove(path)
  decoded = ds._read_records('train', np.arange(lo, hi))
  first = ds.train_batch(3)
  assert os.path.exists(path)
  pipeline._DECODED.clear()  # as a new process: the file, not the records

  def no_records(*args):
    raise AssertionError('decoded the records again')

  with monkeypatch.context() as m:
    m.setattr(pipeline.Dataset, '_read_records', no_records)
    again = pipeline.Dataset(cfg)
    for k in ('image', 'label'):
      np.testing.assert_array_equal(again.train_batch(3)[k], first[k])
      np.testing.assert_array_equal(again._arrays['train'][k], decoded[k])
      assert again._arrays['train'][k].dtype == decoded[k].dtype
  # A file whose size does not match the split is decoded again, and rewritten.
  with open(path, 'wb') as f:
    np.savez(f, _num_examples=999, image=decoded['image'][:10], label=decoded['label'][:10])
  pipeline._DECODED.clear()
  fresh = pipeline.Dataset(cfg)
  np.testing.assert_array_equal(fresh.train_batch(3)['image'], first['image'])
  with np.load(path) as f:
    assert int(f['_num_examples']) == 1000


def test_toy2d_modes_and_metadata():
  ds = pipeline.Dataset(data_cfg('toy2d/grid25'))
  meta = ds.info.metadata
  assert ds.info.modality == 'points' and ds.info.shape == (2,)
  assert len(meta['centers']) == 25 and meta['std'] == 0.05
  x = ds.train_batch(0)['x']
  centers = np.array(meta['centers'])
  dist = np.linalg.norm(x[:, None] - centers[None], axis=-1).min(1)
  assert dist.max() < 0.05 * 6  # every point within 6 std of a mode
  ring = builders.toy2d_modes('ring8')[0]
  np.testing.assert_allclose(np.linalg.norm(ring, axis=1), 1.0)


def test_pysrc_split_rule_and_windows():
  ds = pipeline.Dataset(data_cfg('pysrc', eval_split='validation', seq_len=32, eval_batch_size=128))
  val = ds._sources['validation']
  for i in range(len(val)):
    path = val[i]['path'].decode()
    assert int(hashlib.sha1(path.encode()).hexdigest(), 16) % 20 == 0
    assert '/test/' not in '/' + path and 'site-packages' not in path
  # The split follows the rule on this interpreter's stdlib, whatever its version.
  expected = [rel for rel, _ in builders.pysrc_files() if builders.pysrc_split(rel) == 'validation']
  assert sorted(val[i]['path'].decode() for i in range(len(val))) == sorted(expected)
  assert ds.info.num_levels == 256
  batch = ds.train_batch(0)['tokens']
  assert batch.shape == (16, 33) and batch.dtype == np.int32
  # Eval windows overlap by one byte: every byte but the first is a target once.
  stream = ds._text_stream('validation')
  windows = [b['tokens'][b['mask']] for b in ds.eval_batches('validation')]
  windows = np.concatenate(windows)
  targets = windows[:, 1:].reshape(-1)
  n = len(targets)
  np.testing.assert_array_equal(targets, stream[1:1 + n])
  assert len(stream) - 1 - n < 32


def test_missing_and_unknown_datasets_say_what_to_do(tmp_path, monkeypatch):
  with pytest.raises(pipeline.DatasetError, match=r"'mnist' is not prepared.*genjax.data.prepare mnist"):
    pipeline.get_builder('mnist', str(tmp_path), download=False)
  with pytest.raises(pipeline.DatasetError, match=r"'mnist' is not prepared.*offline"):
    monkeypatch.setattr(pipeline, '_resolves', lambda host: False)
    pipeline.get_builder('mnist', str(tmp_path), download=True)
  with pytest.raises(pipeline.DatasetError, match="unknown dataset 'no_such_dataset'"):
    pipeline.get_builder('no_such_dataset', str(tmp_path))


def test_batch_must_split_over_devices(monkeypatch):
  monkeypatch.setattr(jax, 'device_count', lambda: 4)  # whatever the backend has
  with pytest.raises(ValueError, match='multiple of the number of devices'):
    pipeline.Dataset(data_cfg('digits', batch_size=10))


@pytest.mark.parametrize('name,split', [('pysrc', 'validation'), ('digits', 'test')])
def test_hosts_split_the_data_and_agree_on_eval_batches(monkeypatch, name, split):
  """Two hosts (faked): disjoint shards that cover the split, equal eval batch counts."""
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  shards, counts, real = [], [], 0
  for host in (0, 1):
    monkeypatch.setattr(jax, 'process_index', lambda host=host: host)
    ds = pipeline.Dataset(data_cfg(name, eval_split=split, eval_batch_size=64))
    batches = list(ds.eval_batches(split))
    counts.append(len(batches))
    real += sum(int(b['mask'].sum()) for b in batches)
    if name == 'pysrc':
      shards.append(ds._text_stream(split))
      full = ds._text[split]
    else:
      assert {b['image'].shape for b in batches} == {(32, 8, 8, 1)}  # 64 over 2 hosts
      # Uneven shares: the host with less pads with all-masked batches.
      monkeypatch.setattr(ds, '_eval_starts', lambda split, p, mb: np.arange(3 if p == 0 else 70))
      uneven = list(ds.eval_batches(split))
      assert len(uneven) == 3 and {b['image'].shape for b in uneven} == {(32, 8, 8, 1)}
      assert [int(b['mask'].sum()) for b in uneven] == ([3, 0, 0] if host == 0 else [32, 32, 6])
  assert counts[0] == counts[1]
  if name == 'pysrc':
    np.testing.assert_array_equal(np.concatenate(shards), full)
    assert abs(len(shards[0]) - len(shards[1])) <= 1
  else:
    assert real == 447
