"""Normalizing flows (RealNVP / Glow): exact likelihood by change of variables.

  python launch.py --config=experiments/flow.py:digits --workdir=/tmp/flow_digits
      Multi-scale flow on 8x8 digits: 2.15 bits/dim on test.
  python launch.py --config=experiments/flow.py:moons --workdir=/tmp/flow_moons
      RealNVP on toy2d (also :ring8, :grid25, :swissroll): moons test NLL 0.371 nats; 5.5 min.
  python launch.py --config=experiments/flow.py:mnist --workdir=/tmp/flow_mnist
  python launch.py --config=experiments/flow.py:cifar10 --workdir=/tmp/flow_cifar10
      Glow-sized flows on 256-level images; need the dataset and an accelerator.

An image's 'nll' is the dequantised bound (-log p(y) + D log L, y = (x + u) / L) on
the discrete NLL. Measurements: README.md, Results. `:digits,smoke` is the same
experiment shrunk to 4 steps.
"""
import ml_collections

from genjax.experiments import common

TOY2D = ('ring8', 'grid25', 'moons', 'swissroll')
VARIANTS = TOY2D + ('digits', 'mnist', 'cifar10')
# What ',smoke' changes beyond experiments.common.SMOKE.
SMOKE = {'model.levels': 2, 'model.steps': 1, 'model.checkerboard_steps': 1, 'model.hidden': 8,
         'model.depth': 1}


def get_config(arg='digits'):
  variant, smoke = common.parse(arg, VARIANTS, 'experiments/flow.py')
  c = common.base('flow', 'digits', batch_size=64, num_steps=3000)

  c.model = ml_collections.ConfigDict()
  c.model.levels = 2  # images: squeeze + steps (+ factor out half) per level
  c.model.steps = 4  # Glow steps per level (images), couplings (points)
  c.model.checkerboard_steps = 2  # images: checkerboard couplings before the first squeeze
  c.model.hidden = 64  # conditioner width
  c.model.num_blocks = 1  # images: residual blocks per conditioner
  c.model.depth = 2  # points: hidden layers per conditioner MLP
  c.model.alpha = 0.05  # images: logit preprocessing (0 = none)
  # Compute dtype of the coupling conditioners ('bfloat16': mixed precision); the
  # couplings, ActNorm, invertible maps and log-determinants stay float32.
  c.model.dtype = 'float32'

  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.optim.weight_decay = 0.0

  c.sample.temperature = 1.0
  c.sample.figure_temperatures = (0.5, 0.75, 1.0)
  c.evals.figures = ml_collections.ConfigDict(dict(kind='figures', every=0, num_examples=16))

  if variant in TOY2D:
    c.data.name = f'toy2d/{variant}'
    c.data.batch_size = 256
    c.data.eval_batch_size = 2000
    c.train.num_steps = 3000
    c.train.checkpoint_every = 1000
    c.train.log_every = 250
    c.model.steps = 8
    c.model.hidden = 128
    common.likelihood_evals(c, every=1000)
    c.evals.density = ml_collections.ConfigDict(dict(kind='density', split='test', every=0))
    c.evals.figures.num_examples = 2000
    if variant in ('ring8', 'grid25'):
      c.evals.modes = ml_collections.ConfigDict(dict(kind='modes', every=0, num_samples=2500))
    c.evals.samples.num_samples = 2000
    c.sample.num_samples = 2000
  elif variant == 'digits':
    # Tuned on the validation split: with 1,000 training images the flow
    # overfits past ~400 steps (README, Results).
    c.train.num_steps = 400
    c.optim.warmup_steps = 50
    c.data.eval_batch_size = 512
    c.train.checkpoint_every = 500
    c.train.log_every = 50
    common.likelihood_evals(c, every=100)
    c.evals.anomaly = ml_collections.ConfigDict(dict(kind='anomaly', split='test', every=0))
  elif variant in ('mnist', 'cifar10'):
    c.data.name = variant
    c.data.eval_split = 'test'  # these TFDS datasets have no validation split
    c.data.batch_size = 64
    c.train.num_steps = 100_000
    c.train.checkpoint_every = 2000
    c.model.levels = 2 if variant == 'mnist' else 3
    c.model.steps = 8 if variant == 'mnist' else 16
    c.model.checkerboard_steps = 0
    c.model.hidden = 256 if variant == 'mnist' else 512
    c.model.num_blocks = 1
    common.likelihood_evals(c, every=5000, max_batches=8, test_split=None)
    c.evals.validation.split = 'test'
  return common.smoke(c, SMOKE) if smoke else c
