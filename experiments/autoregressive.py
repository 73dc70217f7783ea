"""Autoregressive transformer LM on bytes or pixels.

  python launch.py --config=experiments/autoregressive.py:pysrc --workdir=/tmp/ar_pysrc
      Byte-level LM (4 layers, width 128, context 64) on the stdlib sources,
      8,000 steps. Reaches 1.27 nats/byte on the whole validation split
      (1.44 after 3 minutes); the command takes 8.5 minutes on a 2-core CPU.
  python launch.py --config=experiments/autoregressive.py:digits --workdir=/tmp/ar_digits
      8x8 digits as 64 pixel tokens over 17 grey levels, 1,000 steps. Reaches
      1.83 bits/dim (81.0 nats/image, exact) on the 447 test images; the
      command takes 6 minutes on a 2-core CPU.

Any field can be overridden, e.g. `--config.train.num_steps=200`; an unknown
field is an error. data.batch_size is global (split over hosts and devices).
Other TFDS names work where they are prepared: `:pysrc` with
`--config.data.name=tiny_shakespeare`, `:digits` with `--config.data.name=mnist`.
"""
import ml_collections

VARIANTS = ('pysrc', 'digits')


def get_config(arg='pysrc'):
  if arg not in VARIANTS:
    raise ValueError(f'unknown variant {arg!r} of experiments/autoregressive.py; use one of {VARIANTS}')
  c = ml_collections.ConfigDict()
  c.family = 'autoregressive'
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'pysrc'
  c.data.data_dir = ''  # '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.data.download = True  # let TFDS download datasets that are not genjax's own
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'
  c.data.seq_len = 64  # text only: tokens of context per window
  c.data.batch_size = 12
  c.data.eval_batch_size = 256

  c.model = ml_collections.ConfigDict()
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.width = 128
  c.model.mlp_ratio = 4
  c.model.positions = 'rotary'  # or 'learned'
  c.model.dropout = 0.0
  c.model.dtype = 'float32'  # compute dtype; params stay float32

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'adamw'
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 200
  c.optim.schedule = 'cosine'
  c.optim.min_lr_ratio = 0.1
  c.optim.b1 = 0.9
  c.optim.b2 = 0.99
  c.optim.weight_decay = 0.1
  c.optim.grad_clip = 1.0

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 8000
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.eval_batches = 8  # periodic evals use this many batches; the final one all
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 2
  c.train.progress_bar = True

  c.sample = ml_collections.ConfigDict()
  c.sample.num_samples = 4
  c.sample.temperature = 0.8  # 0 = greedy
  c.sample.top_k = 0  # 0 = off
  c.sample.top_p = 0.95  # 1.0 = off
  c.sample.prompt = 'def '  # text only
  c.sample.length = 256  # text only: bytes after the prompt

  if arg == 'digits':
    # Tuned on the validation split (dropout 0.1 overfits after ~600 steps).
    c.data.name = 'digits'
    c.data.eval_split = 'test'
    c.data.batch_size = 64
    c.data.eval_batch_size = 512
    c.model.dropout = 0.3
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 100
    c.train.num_steps = 1000
    c.train.eval_every = 200
    c.train.eval_batches = -1
    c.train.checkpoint_every = 200
    c.sample.num_samples = 64
    c.sample.temperature = 1.0
    c.sample.top_p = 1.0
  return c
