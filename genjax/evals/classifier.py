"""A small image classifier shared by the sample evaluations, and the evaluator
that labels a model's samples with it.

The classifier (a small convnet) is trained on the dataset's train split the
first time it is asked for, evaluated on the test split, and cached on disk
under `<data dir>/genjax_classifiers/`, keyed by the dataset and the
classifier's settings. `load(dataset)` returns it; `.predict(images)` gives
class probabilities, `.features(images)` the penultimate layer (for a Fréchet
distance), `.test_accuracy` its accuracy on the test split.

The evaluator draws `num_samples` samples, classifies them, and reports the
class histogram (`class_<k>`: share of samples), its entropy in nats
(`entropy`; log K for a uniform histogram, 0 for a generator stuck on one
class), `kl_uniform` = log K - entropy, `classes` (classes holding at least
1% of the samples), `confidence` (mean top probability: low for samples that
look like no class) and the classifier's `test_accuracy`.

cfg: num_samples (1,000); optional classifier settings (steps, width, lr,
batch_size, seed; the defaults below), data_dir.
"""
import hashlib
import json
import os

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax.data import pipeline

DEFAULTS = dict(steps=1500, width=32, lr=2e-3, batch_size=128, weight_decay=1e-4, seed=0,
                version=1)
_LOADED = {}


class ConvNet(nn.Module):
  """3x3 convs with stride-2 stages down to <= 4x4, mean pool, a 128-unit
  feature layer, then class logits."""
  num_classes: int
  width: int = 32

  @nn.compact
  def __call__(self, x_BxHxWxC, features=False):
    h = nn.relu(nn.Conv(self.width, (3, 3))(x_BxHxWxC))
    ch = self.width
    while h.shape[1] > 4:
      ch *= 2
      h = nn.relu(nn.Conv(ch, (3, 3), strides=(2, 2))(h))
    h = nn.relu(nn.Conv(ch, (3, 3))(h))
    f = nn.relu(nn.Dense(128)(h.mean(axis=(1, 2))))
    return f if features else nn.Dense(self.num_classes)(f)


def _read_split(builder, split):
  src = builder.as_data_source(split=split)
  records = src.__getitems__(list(range(len(src))))
  return (np.stack([np.asarray(r['image']) for r in records]),
          np.array([int(r['label']) for r in records], np.int32))


class Classifier:
  """A trained ConvNet for one dataset; images in [0, num_levels - 1]."""

  def __init__(self, module, params, num_levels, test_accuracy):
    self.module, self.params = module, params
    self.num_levels, self.test_accuracy = num_levels, test_accuracy
    self._logits = jax.jit(lambda p, x: module.apply({'params': p}, x))
    self._features = jax.jit(lambda p, x: module.apply({'params': p}, x, features=True))

  def _scaled(self, images):
    return jnp.asarray(images, jnp.float32) / (self.num_levels - 1)

  def _batched(self, fn, images, batch=1000):
    return np.concatenate([np.asarray(fn(self.params, self._scaled(images[i:i + batch])))
                           for i in range(0, len(images), batch)])

  def predict(self, images_NxHxWxC):
    """Class probabilities (N, K)."""
    return np.asarray(jax.nn.softmax(self._batched(self._logits, images_NxHxWxC), axis=-1))

  def features(self, images_NxHxWxC):
    """Penultimate-layer activations (N, 128)."""
    return self._batched(self._features, images_NxHxWxC)


def train_classifier(images, labels, num_classes, num_levels, settings):
  """Adam with weight decay on the train split, shuffled each epoch; returns params."""
  s = settings
  module = ConvNet(num_classes, s['width'])
  x = jnp.asarray(images, jnp.float32) / (num_levels - 1)
  y = jnp.asarray(labels)
  rng = jax.random.PRNGKey(s['seed'])
  params = module.init(rng, x[:1])['params']
  tx = optax.adamw(optax.cosine_decay_schedule(s['lr'], s['steps']), weight_decay=s['weight_decay'])
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, key):
    k_idx, k_shift = jax.random.split(key)
    idx = jax.random.randint(k_idx, (s['batch_size'],), 0, x.shape[0])
    # One-pixel random translations: the test split is small, augmentation helps.
    shift = jax.random.randint(k_shift, (2,), -1, 2)
    xb = jnp.roll(x[idx], shift, axis=(1, 2))
    loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        module.apply({'params': p}, xb), y[idx]).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for i in range(s['steps']):
    params, opt_state = step(params, opt_state, jax.random.fold_in(rng, i))
  return module, params


def cache_path(dataset, data_dir, settings):
  key = hashlib.sha1(json.dumps({'dataset': dataset, **settings}, sort_keys=True).encode())
  safe = dataset.replace('/', '_').replace(':', '_')
  return os.path.join(data_dir, 'genjax_classifiers', f'{safe}_{key.hexdigest()[:12]}')


def load(dataset, data_dir='', **settings):
  """The dataset's classifier: from the in-process or on-disk cache, else trained now."""
  data_dir = data_dir or pipeline.default_data_dir()
  s = {**DEFAULTS, **settings}
  path = cache_path(dataset, data_dir, s)
  if path in _LOADED:
    return _LOADED[path]
  builder = pipeline.get_builder(dataset, data_dir)
  info = pipeline._info_from_builder(builder, dataset, 0)  # pylint: disable=protected-access
  if info.modality != 'image' or not info.num_classes:
    raise ValueError(f'the classifier needs a labelled image dataset; {dataset!r} is not one')
  module = ConvNet(info.num_classes, s['width'])
  if not os.path.exists(path + '.json'):
    with pipeline.file_lock(path + '.lock'):  # trained once when several processes ask
      if not os.path.exists(path + '.json'):
        _train_and_cache(builder, dataset, info, s, path)
  with open(path + '.json') as f:
    meta = json.load(f)
  template = module.init(jax.random.PRNGKey(0), jnp.zeros((1,) + tuple(info.shape)))['params']
  with open(path + '.msgpack', 'rb') as f:
    params = flax.serialization.from_bytes(template, f.read())
  _LOADED[path] = Classifier(module, params, info.num_levels, meta['test_accuracy'])
  return _LOADED[path]


def _train_and_cache(builder, dataset, info, s, path):
  images, labels = _read_split(builder, 'train')
  module, params = train_classifier(images, labels, info.num_classes, info.num_levels, s)
  test_images, test_labels = _read_split(builder, 'test')
  clf = Classifier(module, params, info.num_levels, None)
  acc = float(np.mean(clf.predict(test_images).argmax(-1) == test_labels))
  meta = {'dataset': dataset, 'settings': s, 'test_accuracy': acc,
          'train_examples': len(labels), 'test_examples': len(test_labels)}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.msgpack.tmp', 'wb') as f:
    f.write(flax.serialization.to_bytes(params))
  os.replace(path + '.msgpack.tmp', path + '.msgpack')
  with open(path + '.json.tmp', 'w') as f:  # written last: it marks the cache complete
    json.dump(meta, f, indent=2)
  os.replace(path + '.json.tmp', path + '.json')


def features(images, dataset='digits', data_dir='', **settings):
  """Penultimate-layer features of `images` under `dataset`'s classifier."""
  return load(dataset, data_dir, **settings).features(images)


def histogram_stats(probs_NxK, min_share=0.01):
  """Class histogram of the predictions and its entropy (nats)."""
  K = probs_NxK.shape[1]
  counts = np.bincount(probs_NxK.argmax(-1), minlength=K)
  p = counts / max(counts.sum(), 1)
  entropy = float(-np.sum(p[p > 0] * np.log(p[p > 0])))
  out = {f'class_{k}': float(p[k]) for k in range(K)}
  out.update(entropy=entropy, kl_uniform=float(np.log(K) - entropy),
             classes=int(np.sum(p >= min_share)), confidence=float(probs_NxK.max(-1).mean()))
  return out


class Evaluator:

  def __init__(self, name, cfg, ctx):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    info = ctx.data.info
    if info.modality != 'image' or not info.num_classes:
      raise ValueError(f'evals.{name}: the classifier evaluation needs a labelled image '
                       f'dataset; {info.name!r} is not one')
    self.settings = {k: cfg[k] for k in DEFAULTS if k in cfg}

  def run(self, step, rstate, host_state, final):
    del rstate, final
    if jax.process_index() != 0:
      return {}
    clf = load(self.ctx.data_config.name, self.cfg.get('data_dir', '') or
               self.ctx.data_config.data_dir, **self.settings)
    rng = self.ctx.key(self.name, step)
    images = self.ctx.family.sample(host_state(), rng, self.cfg.num_samples)['image']
    out = histogram_stats(clf.predict(images))
    out['test_accuracy'] = clf.test_accuracy
    return out
