"""Masked (absorbing-state) discrete diffusion of bytes (MDLM-style).

  python launch.py --config=experiments/masked_diffusion.py:pysrc --workdir=/tmp/mdlm_pysrc
      On the stdlib sources: bound 2.01 nats/byte on validation.
  python launch.py --config=experiments/masked_diffusion.py:pysrc_blocks --workdir=/tmp/bd3lm_pysrc
      Block diffusion (BD3-LM), 2-byte blocks: bound 1.543 nats/byte; 9 min 20 s.

Sampling steps are a sampling-time choice: `--mode=sample --config.sample.steps=16`
(per block with blocks). Measurements: README.md, Results. `:pysrc,smoke` is the
same experiment shrunk to 4 steps.
"""
import ml_collections

from genjax.experiments import common

VARIANTS = ('pysrc', 'pysrc_blocks')
SMOKE = {'model.num_layers': 1, 'model.num_heads': 2, 'model.width': 32, 'sample.steps': 4,
         'train.max_seconds': 0.0}


def get_config(arg='pysrc'):
  variant, smoke = common.parse(arg, VARIANTS, 'experiments/masked_diffusion.py')
  c = common.base('masked_diffusion', 'pysrc', batch_size=32, num_steps=2800)
  # Any byte-level TFDS text works through data.name.

  c.model = ml_collections.ConfigDict()
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.width = 128
  c.model.mlp_ratio = 4
  c.model.positions = 'rotary'
  c.model.dropout = 0.0
  c.model.dtype = 'float32'
  # 'elbo': the ELBO estimate with its 1/t weights; 'masked_mean': the mean NLL of
  # the masked bytes (lower variance); evaluation always reports the ELBO bound.
  c.model.loss = 'masked_mean'
  # Blocks of this many bytes diffused left to right, each given the clean ones
  # before it (BD3-LM); 0 = the whole window is one block (MDLM).
  c.model.block_size = 0

  c.optim.lr = 2e-3
  c.optim.warmup_steps = 200
  c.optim.weight_decay = 0.1
  c.train.max_seconds = 496.0  # the AR default's training time (README, Results)

  common.likelihood_evals(c, every=1000, max_batches=8, test_split=None)
  c.evals.samples.num_samples = 4

  c.sample.num_samples = 4
  c.sample.steps = 64  # denoising steps (network evaluations per sample)
  c.sample.temperature = 1.0
  c.sample.top_k = 0
  c.sample.top_p = 1.0
  c.sample.prompt = 'def '

  if variant == 'pysrc_blocks':
    c.model.block_size = 2
    c.data.batch_size = 16  # the two-stream pass reads 2 x 64 tokens an example
    c.train.num_steps = 3000  # a little more than train.max_seconds holds (README, Results)
    c.evals.validation.every = 500
    c.sample.steps = 2  # per block: one byte a step
  return common.smoke(c, SMOKE) if smoke else c
