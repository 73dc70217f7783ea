"""Autoregressive transformer LM on bytes or pixels.

  python launch.py --config=experiments/autoregressive.py:pysrc --workdir=/tmp/ar_pysrc
      Bytes of the stdlib sources: 1.27 nats/byte on validation.
  python launch.py --config=experiments/autoregressive.py:digits --workdir=/tmp/ar_digits
      8x8 digits as 64 pixel tokens: 1.83 bits/dim (exact) on test.
  python launch.py --config=experiments/autoregressive.py:mnist --workdir=/tmp/ar_mnist
  python launch.py --config=experiments/autoregressive.py:cifar10 --workdir=/tmp/ar_cifar10
      Research scale, 256-level pixels in raster order; needs the dataset and an accelerator.

Measurements: README.md, Results. `:digits,smoke` is the same experiment shrunk to 4
steps. Other TFDS names work where they are prepared: `:pysrc` with
`--config.data.name=tiny_shakespeare`, `:mnist` with `--config.data.name=fashion_mnist`.
"""
import ml_collections

from genjax.experiments import common

VARIANTS = ('pysrc', 'digits', 'mnist', 'cifar10')
# What ',smoke' changes beyond experiments.common.SMOKE.
SMOKE = {'model.num_layers': 1, 'model.num_heads': 2, 'model.width': 32, 'model.dropout': 0.0,
         'sample.length': 20}
# And for mnist and cifar10, whose sequences are long: a batch of 4 and 4 samples
# (each is 784 or 3,072 sequential decoding steps).
IMAGE_SMOKE = {'data.batch_size': 4, 'data.eval_batch_size': 16, 'evals.samples.num_samples': 4}


def get_config(arg='pysrc'):
  variant, smoke = common.parse(arg, VARIANTS, 'experiments/autoregressive.py')
  c = common.base('autoregressive', 'pysrc', batch_size=12, num_steps=8000)

  c.model = ml_collections.ConfigDict()
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.width = 128
  c.model.mlp_ratio = 4
  c.model.positions = 'rotary'  # or 'learned'
  c.model.dropout = 0.0
  c.model.dtype = 'float32'  # compute dtype; params stay float32
  c.model.remat = False  # recompute activations in the backward pass (long sequences)

  c.optim.lr = 2e-3
  c.optim.warmup_steps = 200
  c.optim.weight_decay = 0.1

  # Periodic evaluations read 8 evenly spaced batches; the final one the whole split.
  common.likelihood_evals(c, every=1000, max_batches=8, test_split=None)
  c.evals.samples.num_samples = 4

  c.sample.num_samples = 4
  c.sample.temperature = 0.8  # 0 = greedy
  c.sample.top_k = 0  # 0 = off
  c.sample.top_p = 0.95  # 1.0 = off
  c.sample.prompt = 'def '  # text only
  c.sample.length = 256  # text only: bytes after the prompt

  if variant == 'digits':
    # Tuned on the validation split (dropout 0.1 overfits after ~600 steps).
    c.data.name = 'digits'
    c.data.batch_size = 64
    c.data.eval_batch_size = 512
    c.model.dropout = 0.3
    c.optim.warmup_steps = 100
    c.train.num_steps = 1000
    c.train.checkpoint_every = 200
    common.likelihood_evals(c, every=200)
    c.evals.samples.num_samples = 64
    c.sample.num_samples = 64
    c.sample.temperature = 1.0
    c.sample.top_p = 1.0
  elif variant in ('mnist', 'cifar10'):
    _images(c, variant)
    return common.smoke(c, {**SMOKE, **IMAGE_SMOKE}) if smoke else c
  return common.smoke(c, SMOKE) if smoke else c


def _images(c, variant):
  """Both batches hold about 50k tokens a step. Attention over cifar10's 3,072
  positions keeps T x T probabilities per head and layer for the backward
  pass: its blocks are recomputed there instead (model.remat)."""
  c.data.name = variant
  c.data.eval_split = 'test'  # these TFDS datasets have no validation split
  c.data.batch_size = 64 if variant == 'mnist' else 16
  c.data.eval_batch_size = 64 if variant == 'mnist' else 16
  c.model.num_layers = 8 if variant == 'mnist' else 12
  c.model.width = 256 if variant == 'mnist' else 384
  c.model.num_heads = 8 if variant == 'mnist' else 6
  c.model.dropout = 0.1
  c.model.dtype = 'bfloat16'
  c.model.remat = variant == 'cifar10'
  c.optim.lr = 1e-3 if variant == 'mnist' else 5e-4
  c.optim.warmup_steps = 2000
  c.train.num_steps = 100_000
  c.train.checkpoint_every = 10_000
  # Periodic checks read 4 evenly spaced test batches; 'test' reads it all at the end.
  common.likelihood_evals(c, every=5000, max_batches=4, test_split='test')
  c.evals.validation.split = 'test'
  c.evals.samples.every = 10_000
  c.evals.samples.num_samples = 64 if variant == 'mnist' else 16
  c.sample.num_samples = c.evals.samples.num_samples
  c.sample.temperature = 1.0
  c.sample.top_p = 1.0
