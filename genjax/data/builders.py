"""TFDS builders for datasets that prepare with no network.

Importing this module registers `toy2d` (configs ring8, grid25, moons,
swissroll), `digits` and `pysrc` with TFDS. They are written as array_record
and read back through `tfds.data_source`, so TensorFlow is never imported.
"""
import hashlib
import os
import sysconfig

import numpy as np
import tensorflow_datasets as tfds

_VERSION = tfds.core.Version('1.0.0')


def _info(builder, features, description, metadata=None):
  return tfds.core.DatasetInfo(builder=builder, description=description, features=features,
                               metadata=tfds.core.MetadataDict(metadata or {}),
                               disable_shuffling=True)


# ----------------------------------------------------------------------------- toy2d

# 1.1.0: a validation split (model selection), drawn with its own seed.
_TOY2D_VERSION = tfds.core.Version('1.1.0')


class Toy2dConfig(tfds.core.BuilderConfig):

  def __init__(self, *, num_train=100_000, num_eval=10_000, **kwargs):
    super().__init__(version=_TOY2D_VERSION, **kwargs)
    self.num_train, self.num_eval = num_train, num_eval


def toy2d_modes(name):
  """(centers Kx2, std) of the Gaussian mixtures; None for the manifolds."""
  if name == 'ring8':  # PacGAN / VEEGAN protocol
    angles = 2 * np.pi * np.arange(8) / 8
    return np.stack([np.cos(angles), np.sin(angles)], 1), 0.01
  if name == 'grid25':
    g = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
    return np.stack(np.meshgrid(g, g, indexing='ij'), -1).reshape(-1, 2), 0.05
  return None, None


def toy2d_points(name, n, rng):
  centers, std = toy2d_modes(name)
  if centers is not None:
    k = rng.integers(len(centers), size=n)
    return centers[k] + std * rng.standard_normal((n, 2)), k
  if name == 'moons':
    t = rng.uniform(0, np.pi, n)
    upper = rng.integers(2, size=n)
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    return np.stack([x, y], 1) + 0.05 * rng.standard_normal((n, 2)), upper
  if name == 'swissroll':
    t = 1.5 * np.pi * (1 + 2 * rng.uniform(size=n))
    pts = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 5.0
    return pts + 0.1 * rng.standard_normal((n, 2)), np.zeros(n, np.int64)
  raise ValueError(f'unknown toy2d config {name!r}')


class Toy2d(tfds.core.GeneratorBasedBuilder):
  """Points in R^2: Gaussian mixtures (mode-collapse benchmarks) and manifolds."""
  VERSION = _TOY2D_VERSION
  BUILDER_CONFIGS = [
      Toy2dConfig(name='ring8', description='8 Gaussians on the unit circle, std 0.01.'),
      Toy2dConfig(name='grid25', description='25 Gaussians on {-4,-2,0,2,4}^2, std 0.05.'),
      Toy2dConfig(name='moons', description='Two interleaved half circles, noise 0.05.'),
      Toy2dConfig(name='swissroll', description='2-D swiss roll scaled by 1/5, noise 0.1.'),
  ]

  def _info(self):
    centers, std = toy2d_modes(self.builder_config.name)
    metadata = {} if centers is None else {'centers': centers.tolist(), 'std': std}
    return _info(self, tfds.features.FeaturesDict({
        'x': tfds.features.Tensor(shape=(2,), dtype=np.float32),
        'label': tfds.features.Scalar(dtype=np.int64),  # mode index (moons: which half)
    }), self.builder_config.description, metadata)

  def _split_generators(self, dl_manager):
    c = self.builder_config
    return {'train': self._generate_examples(c.num_train, seed=0),
            'validation': self._generate_examples(c.num_eval, seed=2),
            'test': self._generate_examples(c.num_eval, seed=1)}

  def _generate_examples(self, n, seed):
    x, k = toy2d_points(self.builder_config.name, n, np.random.default_rng(seed))
    for i in range(n):
      yield i, {'x': x[i].astype(np.float32), 'label': int(k[i])}


# ----------------------------------------------------------------------------- digits

DIGITS_SPLITS = {'train': (0, 1000), 'validation': (1000, 1350), 'test': (1350, 1797)}


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's bundled 8x8 digits, grey levels 0..16, split in file order."""
  VERSION = _VERSION

  def _info(self):
    return _info(self, tfds.features.FeaturesDict({
        'image': tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
        'label': tfds.features.ClassLabel(num_classes=10),
        'index': tfds.features.Scalar(dtype=np.int64),  # position in load_digits()
    }), 'UCI optical digits (sklearn.datasets.load_digits): train = first 1000, '
        'validation = next 350, test = last 447.', {'num_levels': 17})

  def _split_generators(self, dl_manager):
    return {name: self._generate_examples(lo, hi) for name, (lo, hi) in DIGITS_SPLITS.items()}

  def _generate_examples(self, lo, hi):
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    d = load_digits()
    for i in range(lo, hi):
      image = d.images[i].astype(np.uint8)[..., None]
      yield i, {'image': image, 'label': int(d.target[i]), 'index': i}


# ----------------------------------------------------------------------------- pysrc

def pysrc_files():
  """(relative path, absolute path) of the stdlib's .py files, sorted."""
  root = sysconfig.get_paths()['stdlib']
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in ('test', 'site-packages', '__pycache__'))
    for f in sorted(filenames):
      if f.endswith('.py'):
        path = os.path.join(dirpath, f)
        out.append((os.path.relpath(path, root), path))
  return out


def pysrc_split(relpath):
  digest = int(hashlib.sha1(relpath.encode('utf-8')).hexdigest(), 16)
  return 'validation' if digest % 20 == 0 else 'train'


class Pysrc(tfds.core.GeneratorBasedBuilder):
  """Byte-level corpus of this interpreter's standard library sources."""
  VERSION = _VERSION

  def _info(self):
    return _info(self, tfds.features.FeaturesDict({
        'text': tfds.features.Text(),
        'path': tfds.features.Text(),
    }), 'Standard-library .py files (no site-packages, no test dirs); validation = files whose '
        'SHA-1 of the relative path is 0 mod 20.', {'vocab_size': 256})

  def _split_generators(self, dl_manager):
    files = pysrc_files()
    return {split: self._generate_examples([f for f in files if pysrc_split(f[0]) == split])
            for split in ('train', 'validation')}

  def _generate_examples(self, files):
    for rel, path in files:
      with open(path, 'rb') as f:
        # Stdlib sources are UTF-8 (PEP 3120); reading back gives the file's bytes.
        yield rel, {'text': f.read().decode('utf-8'), 'path': rel}
