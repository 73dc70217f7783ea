"""TFDS image datasets that cannot be downloaded here, mocked for tests.

`mock_tfds(tmp_dir)` writes each dataset's real metadata (features from its
TFDS builder, splits of the given sizes) under `tmp_dir`, then serves
deterministic random examples of the real shapes through
`tfds.testing.mock_data`. genjax.data reads them like a prepared dataset.

In-process only (it patches TFDS), and while active every builder's data_dir
is `tmp_dir`, genjax's own offline builders too.
"""
import contextlib
import os
import zlib

import numpy as np
import tensorflow_datasets as tfds


class RandomSource:
  """A list-like data source of {'image', 'label'} examples; each is a pure
  function of (dataset, split, index). TFDS's default mock source is not
  used: its `__getitems__` is broken in the TFDS this was written against."""

  def __init__(self, name, split, length, shape, num_classes):
    self.name, self.split, self.length = name, split, length
    self.shape, self.num_classes = tuple(shape), num_classes

  def __len__(self):
    return self.length

  def __getitem__(self, index):
    if not 0 <= index < self.length:
      raise IndexError(f'index {index} out of range for {self.length} examples')
    rng = np.random.default_rng([zlib.crc32(f'{self.name}/{self.split}'.encode()), int(index)])
    return {'image': rng.integers(0, 256, self.shape, dtype=np.uint8),
            'label': int(rng.integers(0, self.num_classes))}

  def __getitems__(self, indices):
    return [self[i] for i in indices]


def write_info(name, tmp_dir, counts):
  """Writes `name`'s real dataset_info.json under tmp_dir, with splits of `counts`."""
  builder = tfds.builder(name, data_dir=tmp_dir, file_format='array_record')
  info = builder.info
  info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0) for s, n in counts.items()]))
  os.makedirs(builder.data_dir, exist_ok=True)
  info.write_to_directory(builder.data_dir)


@contextlib.contextmanager
def mock_tfds(tmp_dir, names=('mnist', 'cifar10'), counts=None):
  """Within the block, `names` read as prepared datasets with `counts` examples per split."""
  counts = dict(counts or {'train': 64, 'test': 32})
  for name in names:
    write_info(name, str(tmp_dir), counts)

  def as_data_source(builder, split=None, **kwargs):
    del kwargs
    features = builder.info.features
    return RandomSource(builder.name, split, builder.info.splits[split].num_examples,
                        features['image'].shape, features['label'].num_classes)

  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_FILES, data_dir=str(tmp_dir),
                              as_data_source_fn=as_data_source):
    yield
