"""GANs on toy 2-D mixtures and on images.

  python launch.py --config=experiments/gan.py:digits --workdir=/tmp/gan_digits
      DCGAN on 8x8 digits: all 10 classes in its samples.
  python launch.py --config=experiments/gan.py:ring8 --workdir=/tmp/gan_ring8
      MLP GAN (PacGAN-2, R1, EMA G): 8/8 modes on each of 10 seeds.
  python launch.py --config=experiments/gan.py:grid25 --workdir=/tmp/gan_grid25
      The same on the 5x5 grid: 25/25 modes on each of 10 seeds.
  python launch.py --config=experiments/gan.py:grid25_collapse --workdir=/tmp/gan_collapse
      The documented failure (saturating loss, D at 5x G's lr): 16.5 of 25 modes on average.
  python bench/gan_modes.py
      ring8, grid25 and grid25_collapse over 10 seeds: the table the mode counts come from.
  :moons, :swissroll (scatter plots only), :mnist, :cifar10 (need the datasets prepared).

Measurements: README.md, Results. `:digits,smoke` is the same experiment shrunk to 4 steps.
"""
import ml_collections

from genjax.experiments import common

TOY = ('ring8', 'grid25', 'moons', 'swissroll')
VARIANTS = TOY + ('grid25_collapse', 'ring8_collapse', 'digits', 'mnist', 'cifar10')
# What ',smoke' changes beyond experiments.common.SMOKE (which also caps every
# evaluator's num_samples at 16).
SMOKE = {'model.g_width': 16, 'model.d_width': 16, 'model.latent_dim': 4}


def get_config(arg='digits'):
  variant, smoke = common.parse(arg, VARIANTS, 'experiments/gan.py')
  toy = variant.split('_')[0] in TOY
  c = common.base('gan', 'digits', batch_size=64, num_steps=4000)

  c.model = ml_collections.ConfigDict()
  c.model.latent_dim = 32
  c.model.g_width = 64  # MLP: hidden units; convnet: base channels
  c.model.d_width = 64
  c.model.g_depth = 3  # MLP only
  c.model.d_depth = 3
  c.model.conditional = False  # labels into G, a projection D
  c.model.pack = 1  # PacGAN: D judges this many samples at once
  c.model.data_scale = 1.0  # points: the networks see x / data_scale
  c.model.dtype = 'float32'  # compute dtype ('bfloat16': mixed precision); params stay float32

  c.gan = ml_collections.ConfigDict()
  c.gan.loss = 'nonsaturating'  # 'minimax' | 'nonsaturating' | 'hinge' | 'wgan_gp'
  c.gan.n_critic = 1  # D steps per G step
  c.gan.gp_weight = 0.0  # WGAN-GP: 10
  c.gan.r1_weight = 0.0
  c.gan.ema = 0.999  # 0 = sample from the raw G

  del c.optim['lr']
  c.optim.name = 'adam'
  c.optim.g_lr = 2e-4  # the two Adams' learning rates; the other optim fields are shared
  c.optim.d_lr = 2e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  c.optim.schedule = 'constant'
  c.optim.warmup_steps = 0
  c.optim.grad_clip = 0.0

  c.sample.truncation = 0.0  # > 0: z from a normal truncated to [-t, t]

  if toy:
    _toy(c, variant)
  else:
    _images(c, variant)
  if smoke:
    common.smoke(c, SMOKE)
    if 'classifier' in c.evals:  # a quick classifier (cached apart from the real one)
      c.evals.classifier.steps = 50
      if variant in ('mnist', 'cifar10'):  # larger images: a smaller classifier, 2 steps
        c.evals.classifier.update(dict(steps=2, batch_size=16, width=8))
  return c


def _toy(c, variant):
  name = variant.split('_')[0]
  c.data.name = f'toy2d/{name}'
  c.data.eval_split = 'validation'
  c.data.batch_size = 256
  c.model.latent_dim = 2
  c.model.g_width = 128
  c.model.d_width = 128
  c.model.pack = 2
  c.gan.r1_weight = 0.01
  c.gan.ema = 0.99
  c.optim.g_lr = 1e-3
  c.optim.d_lr = 1e-3
  c.train.num_steps = 3000
  c.train.log_every = 500
  c.train.checkpoint_every = 0
  c.evals.samples.num_samples = 2500
  c.evals.test = ml_collections.ConfigDict(dict(kind='likelihood', split='test', every=0))
  if name in ('ring8', 'grid25'):
    c.evals.modes = ml_collections.ConfigDict(dict(kind='modes', every=1000, num_samples=2500))
  c.sample.num_samples = 2500
  if variant == 'grid25':  # 25 sharp modes take long training with a decaying lr
    c.train.num_steps = 40000
    c.optim.schedule = 'cosine'  # to optim.min_lr_ratio (0.1) of the lr
    c.evals.modes.every = 10000
  if variant.endswith('_collapse'):
    c.model.pack = 1
    c.gan.loss = 'minimax'
    c.gan.r1_weight = 0.0
    c.gan.ema = 0.0
    c.optim.d_lr = 5 * c.optim.g_lr


def _images(c, variant):
  c.data.name = variant
  c.data.eval_split = 'validation' if variant == 'digits' else 'test'
  c.evals.figures = ml_collections.ConfigDict(dict(kind='figures', every=0))
  c.evals.classifier = ml_collections.ConfigDict(
      dict(kind='classifier', every=1000, num_samples=1000))
  c.evals.validation = ml_collections.ConfigDict(
      dict(kind='likelihood', split=c.data.eval_split, every=1000, max_batches=4))
  c.gan.r1_weight = 1.0
  if variant == 'digits':
    c.train.num_steps = 2500
    c.evals.classifier.every = c.evals.validation.every = 500
  if variant == 'mnist':
    c.train.num_steps = 20000
  elif variant == 'cifar10':
    c.model.g_width = c.model.d_width = 128
    c.model.latent_dim = 128
    c.train.num_steps = 50000
