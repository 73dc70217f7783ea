"""Input pipeline: any prepared TFDS dataset -> host-local numpy batches.

Datasets are read with `tfds.data_source` (array_record, random access), so
TensorFlow is never imported. A training batch is a pure function of the step
(`Dataset.train_batch(step)`), which is what makes a resumed run see exactly
the data an uninterrupted one would have seen. Each host keeps only its own
contiguous shard of every split (`jax.process_index()` of
`jax.process_count()`): image and point datasets read only its examples, text
is cut by bytes. A host gets `global_batch / process_count` examples.

Batches are dicts of numpy arrays with a leading batch axis:
  image datasets: 'image' uint8 (B, H, W, C) in [0, num_levels - 1], 'label'
  text datasets:  'tokens' int32 (B, seq_len + 1) byte tokens
  point datasets: 'x' float32 (B, D), 'label'
Eval batches also hold 'mask' (B,), False on the padding of the last batch.
"""
import collections
import contextlib
import dataclasses
import fcntl
import os
import queue
import socket
import threading
from typing import Any

import jax
import numpy as np
import tensorflow_datasets as tfds

from genjax.data import builders  # noqa: F401  (registers the offline builders)
from genjax.errors import GenjaxError

# Builders defined in genjax; they prepare offline, so they are prepared on first use.
OFFLINE = ('toy2d', 'digits', 'pysrc')
# A host's share of an image or point split up to this size is read into memory
# once (record-by-record reads cost more than a small model's step).
IN_MEMORY_BYTES = 512 * 2 ** 20
# Decoded small splits kept in this process (Dataset._decoded), the most recent few.
_DECODED = collections.OrderedDict()
_DECODED_MAX = 8


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  modality: str       # 'image' | 'text' | 'points'
  shape: tuple        # one example: image (H, W, C); text (seq_len + 1,); points (D,)
  num_levels: int     # image: values 0..num_levels-1; text: vocabulary size; points: 0
  num_classes: int    # 0 when unlabelled
  num_examples: dict  # split -> examples (text: bytes)
  metadata: Any = None

  @property
  def value_range(self):
    return (0, self.num_levels - 1) if self.modality == 'image' else None


class DatasetError(GenjaxError, RuntimeError):
  """A dataset that cannot be found or read, with what to do about it."""


def default_data_dir():
  return os.environ.get('TFDS_DATA_DIR', os.path.expanduser('~/tensorflow_datasets'))


def _online(host='storage.googleapis.com', timeout=5.0):
  """Whether TFDS's download host resolves (offline, TFDS would retry for minutes)."""
  result = []
  t = threading.Thread(target=lambda: result.append(_resolves(host)), daemon=True)
  t.start()
  t.join(timeout)
  return bool(result and result[0])


def _resolves(host):
  try:
    return bool(socket.getaddrinfo(host, 443))
  except OSError:
    return False


@contextlib.contextmanager
def file_lock(path):
  """Holds an exclusive lock on `path` (created if missing) for the block: two
  processes sharing a data dir prepare a dataset or a cache once, not together."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def get_builder(name, data_dir, download=True, check_online=True):
  """Returns a prepared array_record builder, preparing offline datasets."""
  data_dir = data_dir or default_data_dir()
  builder = _builder(name, data_dir)
  if builder.is_prepared():
    return builder
  with file_lock(os.path.join(data_dir, f'.{name.replace("/", "_")}.lock')):
    builder = _builder(name, data_dir)  # another process may have prepared it meanwhile
    if builder.is_prepared():
      return builder
    return _prepare(builder, name, data_dir, download, check_online)


def _builder(name, data_dir):
  try:
    builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetError(f'unknown dataset {name!r}: not a genjax builder ({", ".join(OFFLINE)}) '
                       f'nor a TFDS name. See https://www.tensorflow.org/datasets/catalog') from e
  except ValueError as e:
    if 'file format' not in str(e).lower():
      raise
    raise DatasetError(f'dataset {name!r} in {data_dir} was prepared as tfrecord; genjax reads '
                       'array_record. Convert it with `tfds convert_format` or point '
                       'data.data_dir elsewhere.') from e
  return builder


def _prepare(builder, name, data_dir, download, check_online):
  base = name.split('/')[0].split(':')[0]
  prepare_cmd = f'python -m genjax.data.prepare {name} --data_dir={data_dir}'
  if base not in OFFLINE and not download:
    raise DatasetError(f'dataset {name!r} is not prepared in {data_dir}. On a machine with '
                       f'internet run `{prepare_cmd}`, or point data.data_dir at a prepared copy.')
  if base not in OFFLINE and check_online and not _online():
    raise DatasetError(f'dataset {name!r} is not prepared in {data_dir} and this machine is '
                       f'offline. On a machine with internet run `{prepare_cmd}`, or point '
                       'data.data_dir at a prepared copy.')
  try:
    builder.download_and_prepare(file_format='array_record')
  except ModuleNotFoundError as e:
    if 'tensorflow' not in str(e):
      raise
    raise DatasetError(f'preparing {name!r} needs TensorFlow once (TFDS encodes its images with '
                       f'it): `pip install tensorflow-cpu`, then `{prepare_cmd}`; training reads '
                       'the result without TensorFlow.') from e
  except Exception as e:  # pylint: disable=broad-except
    raise DatasetError(f'dataset {name!r} is not prepared in {data_dir} and preparing it failed '
                       f'({type(e).__name__}: {str(e)[:200]}). With internet run `{prepare_cmd}`, '
                       f'or point data.data_dir at a prepared copy.') from e
  return builder


def _info_from_builder(builder, name, seq_len):
  features = builder.info.features
  num_examples = {k: v.num_examples for k, v in builder.info.splits.items()}
  metadata = dict(builder.info.metadata or {})
  num_classes = features['label'].num_classes if 'label' in features and hasattr(
      features['label'], 'num_classes') else 0
  if 'image' in features:
    shape = tuple(features['image'].shape)
    if None in shape:
      raise DatasetError(f'dataset {name!r} has images of varying size {shape}; genjax needs a '
                         'fixed size')
    num_levels = int(metadata.get('num_levels', 256))
    return DatasetInfo(name, 'image', shape, num_levels, num_classes, num_examples, metadata)
  if 'text' in features:
    return DatasetInfo(name, 'text', (seq_len + 1,), 256, 0, num_examples, metadata)
  if 'x' in features:
    shape = tuple(features['x'].shape)
    return DatasetInfo(name, 'points', shape, 0, num_classes, num_examples, metadata)
  raise DatasetError(f'dataset {name!r} has features {list(features)}; genjax reads "image", '
                     '"text" or "x"')


def _host_range(n, p=None):
  """Host p's (default: this host's) contiguous [lo, hi) share of n items."""
  p, k = jax.process_index() if p is None else p, jax.process_count()
  return n * p // k, n * (p + 1) // k


class Dataset:
  """One dataset, batched for this host. See the module docstring."""

  def __init__(self, cfg, seed=0):
    self.cfg = cfg
    self.seed = seed
    builder = get_builder(cfg.name, cfg.data_dir, cfg.download)
    self.info = _info_from_builder(builder, cfg.name, cfg.seq_len)
    self._builder = builder
    self._sources = {}
    for split in (cfg.train_split, cfg.eval_split):
      self._source(split)
    self._batch = _local_batch(cfg.batch_size, 'data.batch_size')
    self._eval_batch = _local_batch(cfg.eval_batch_size, 'data.eval_batch_size')
    self._text = {}
    self._arrays = {}
    self._perms = collections.OrderedDict()

  # ---------------------------------------------------------------- reading
  def _source(self, split):
    if split not in self._sources:
      if split not in self.info.num_examples:
        raise DatasetError(f'dataset {self.cfg.name!r} has no split {split!r}; it has '
                           f'{sorted(self.info.num_examples)}')
      self._sources[split] = self._builder.as_data_source(split=split)
    return self._sources[split]

  def _text_stream(self, split, host=None):
    """A host's contiguous share of the split's bytes (all examples concatenated).

    Text corpora are split by bytes, not by example: tiny_shakespeare is one
    example per split. Each host reads the split's text and keeps its slice.
    """
    if split not in self._text:
      src = self._source(split)
      parts = [np.frombuffer(_as_bytes(src[i]['text']), np.uint8) for i in range(len(src))]
      self._text[split] = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    full = self._text[split]
    lo, hi = _host_range(len(full), host)
    if hi - lo < self.info.shape[0]:
      raise DatasetError(f'split {split!r} of {self.cfg.name!r} holds {hi - lo} bytes per host, '
                         f'fewer than one window of {self.info.shape[0]}')
    return full[lo:hi]

  def _read(self, split, indices):
    """Examples `indices` (of this host's range) of an image or point split."""
    lo, hi = _host_range(len(self._source(split)))
    size = (hi - lo) * int(np.prod(self.info.shape)) * (1 if self.info.modality == 'image' else 4)
    if size > IN_MEMORY_BYTES:
      return self._read_records(split, indices)
    if split not in self._arrays:  # small: this host's share, read once
      self._arrays[split] = self._decoded(split, lo, hi)
    return {k: v[np.asarray(indices) - lo] for k, v in self._arrays[split].items()}

  def _decoded(self, split, lo, hi):
    """Examples [lo, hi) of a small split as arrays. Decoding goes record by
    record in Python (seconds for 100k points), so the arrays are kept: in this
    process, and in a file beside the prepared dataset that other processes
    read. A file that does not match the split's size is decoded again."""
    path = os.path.join(self._builder.data_dir, f'genjax_decoded.{split}.{lo}-{hi}.npz')
    if path in _DECODED:
      _DECODED.move_to_end(path)
      return _DECODED[path]
    arrays, num_examples = None, len(self._source(split))
    try:
      with np.load(path) as f:
        if int(f['_num_examples']) == num_examples:
          arrays = {k: f[k] for k in f.files if k != '_num_examples'}
    except (OSError, KeyError, ValueError):
      pass  # absent, unreadable or from an older version: decode
    if arrays is None:
      arrays = self._read_records(split, np.arange(lo, hi))
      tmp = f'{path}.{os.getpid()}.tmp'
      try:  # written whole, then renamed: a reader never sees half a file
        with open(tmp, 'wb') as f:
          np.savez(f, _num_examples=num_examples, **arrays)
        os.replace(tmp, path)
      except OSError:  # a read-only data_dir: decode again next time
        with contextlib.suppress(OSError):
          os.remove(tmp)
    _DECODED[path] = arrays
    while len(_DECODED) > _DECODED_MAX:
      _DECODED.popitem(last=False)
    return arrays

  def _read_records(self, split, indices):
    records = self._source(split).__getitems__([int(i) for i in indices])
    keys = ('image', 'label') if self.info.modality == 'image' else ('x', 'label')
    out = {k: np.stack([np.asarray(r[k]) for r in records]) for k in keys if k in records[0]}
    if 'label' in out:
      out['label'] = out['label'].astype(np.int32)
    return out

  def _permutation(self, epoch, n):
    if epoch not in self._perms:
      self._perms[epoch] = np.random.default_rng([self.seed, epoch, jax.process_index()]).permutation(n)
      if len(self._perms) > 2:
        self._perms.popitem(last=False)
    return self._perms[epoch]

  # ---------------------------------------------------------------- batches
  def train_batch(self, step):
    """The host-local training batch of `step` (a pure function of step)."""
    split = self.cfg.train_split
    if self.info.modality == 'text':
      stream = self._text_stream(split)
      rng = np.random.default_rng([self.seed, step, jax.process_index()])
      T1 = self.info.shape[0]
      starts = rng.integers(0, len(stream) - T1 + 1, size=self._batch)
      return {'tokens': np.stack([stream[s:s + T1] for s in starts]).astype(np.int32)}
    lo, hi = _host_range(len(self._source(split)))
    n = hi - lo
    pos = step * self._batch + np.arange(self._batch)
    epochs = pos // n
    idx = np.array([self._permutation(e, n)[p % n] for e, p in zip(epochs, pos)]) + lo
    return self._read(split, idx)

  def _eval_starts(self, split, host, max_batches):
    """Host's eval items: window starts in its stream, or example indices."""
    if self.info.modality == 'text':
      T = self.info.shape[0] - 1
      starts = np.arange(0, len(self._text_stream(split, host)) - T, T)
    else:
      starts = np.arange(*_host_range(len(self._source(split)), host))
    n = max_batches * self._eval_batch
    if 0 < n < len(starts):
      # A subset spread evenly over the split, not its first files.
      starts = starts[np.linspace(0, len(starts) - 1, n).astype(np.int64)]
    return starts

  def _empty_batch(self):
    key = {'image': 'image', 'text': 'tokens', 'points': 'x'}[self.info.modality]
    dtype = {'image': np.uint8, 'text': np.int32, 'points': np.float32}[self.info.modality]
    batch = {key: np.zeros((0,) + tuple(self.info.shape), dtype)}
    if 'label' in self._builder.info.features:
      batch['label'] = np.zeros((0,), np.int32)
    return batch

  def train_iter(self, start_step=0, prefetch=2):
    """Yields train_batch(start_step), train_batch(start_step + 1), ... from a thread."""
    return _Prefetch(self.train_batch, start_step, prefetch)

  def eval_batches(self, split=None, max_batches=-1):
    """Deterministic pass over this host's shard of `split`, padded, with 'mask'.

    Text is cut into consecutive windows of seq_len + 1 bytes that overlap by
    one, so every byte after the first is predicted exactly once. With
    `max_batches` > 0, an evenly spaced subset of that many batches is used.
    """
    split = split or self.cfg.eval_split
    B = self._eval_batch
    # Every host must run the same number of batches (they meet in a psum), so
    # each works out every host's count and pads to the largest.
    per_host = [self._eval_starts(split, p, max_batches) for p in range(jax.process_count())]
    num_batches = max(-(-len(s) // B) for s in per_host)
    starts = per_host[jax.process_index()]
    stream = self._text_stream(split) if self.info.modality == 'text' else None
    T1 = self.info.shape[0]
    for b in range(num_batches):
      chunk = starts[b * B:(b + 1) * B]
      if not len(chunk):
        batch = self._empty_batch()
      elif stream is not None:
        batch = {'tokens': np.stack([stream[s:s + T1] for s in chunk]).astype(np.int32)}
      else:
        batch = self._read(split, chunk)
      pad = B - len(chunk)
      batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
      batch['mask'] = np.arange(B) < len(chunk)
      yield batch


def _as_bytes(text):
  return text if isinstance(text, bytes) else text.encode('utf-8')


def _local_batch(global_batch, name):
  hosts, devices = jax.process_count(), jax.device_count()
  if global_batch % devices:
    raise ValueError(f'{name}={global_batch} must be a multiple of the number of devices '
                     f'({devices}: {hosts} host(s) x {jax.local_device_count()} local)')
  return global_batch // hosts


class _Prefetch:
  """Computes fn(step), fn(step + 1), ... in a daemon thread, `size` ahead."""

  def __init__(self, fn, start, size):
    self._queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()

    def work():
      step = start
      while not self._stop.is_set():
        try:
          item = fn(step)
        except BaseException as e:  # pylint: disable=broad-except
          item = e  # re-raised in the consumer's thread
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            pass
        step += 1

    self._thread = threading.Thread(target=work, daemon=True)
    self._thread.start()

  def __iter__(self):
    return self

  def __next__(self):
    item = self._queue.get()
    if isinstance(item, BaseException):
      raise item
    return item

  def close(self):
    """Stops the thread and waits for the batch it is computing, so that
    nothing reads the dataset once the loop has returned."""
    self._stop.set()
    self._thread.join()
