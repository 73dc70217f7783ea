"""Flow matching (straight or VP paths, Euler / Heun / RK4 / dopri5 samplers) on
digits, toy2d and (with internet) mnist, cifar10.

  python launch.py --config=experiments/flow_matching.py:digits --workdir=/tmp/fm_digits
      Class-conditional U-Net on dequantised digits; the eval reports the
      dequantised bound in bits/dim (ODE likelihood, Hutchinson's divergence).
  python launch.py --config=experiments/flow_matching.py:ring8 --workdir=/tmp/fm_ring8
      MLP velocity field on 8 Gaussians (grid25, moons, swissroll likewise),
      exact ODE likelihood with the exact divergence.
  python launch.py --config=experiments/flow_matching.py:mnist --workdir=/tmp/fm_mnist
  python launch.py --config=experiments/flow_matching.py:cifar10 --workdir=/tmp/fm_cifar10
      Research scale (DDPM's U-Net); needs the dataset and an accelerator.

`:digits,smoke` is the same experiment shrunk to a few steps.
"""
import ml_collections

from genjax.experiments import common
from genjax.experiments import diffusion

VARIANTS = ('digits', 'ring8', 'grid25', 'moons', 'swissroll', 'mnist', 'cifar10')
TOY2D = ('ring8', 'grid25', 'moons', 'swissroll')
# What ',smoke' changes beyond experiments.common.SMOKE.
SMOKE = {'model.channels': 8, 'model.num_res_blocks': 1, 'model.channel_mult': (1, 2),
         'model.width': 32, 'model.num_layers': 1, 'model.num_heads': 2,
         'flow_matching.eval_steps': 1, 'flow_matching.probes': 2, 'sample.steps': 4,
         'sample.solver': 'euler',
         'data.batch_size': 16}
SMOKE_DIGITS = diffusion.SMOKE_DIGITS  # the same U-Net on digits


def get_config(arg='digits'):
  variant, smoke = common.parse(arg, VARIANTS, 'experiments/flow_matching.py')
  c = common.base('flow_matching', 'digits', batch_size=64, num_steps=2000)

  c.model = diffusion.network_config()  # diffusion's networks: 'unet' | 'dit' | 'mlp'

  c.flow_matching = ml_collections.ConfigDict()
  c.flow_matching.path = 'straight'  # 'straight' (rectified / OT) | 'vp' (cosine)
  c.flow_matching.p_uncond = 0.2  # label dropout (classifier-free guidance)
  c.flow_matching.ema_decay = 0.995
  c.flow_matching.point_scale = 1.0  # points are divided by this
  # The eval likelihood: RK4 steps from data to noise (or 'dopri5', adaptive
  # to the tolerances), and the divergence: 'exact' (D passes per evaluation)
  # or 'hutchinson' with this many probes.
  c.flow_matching.eval_solver = 'rk4'  # 'euler' | 'heun' | 'rk4' | 'dopri5'
  c.flow_matching.eval_steps = 20  # dopri5: its first step is 1 / eval_steps of the way
  c.flow_matching.eval_rtol = 1e-5
  c.flow_matching.eval_atol = 1e-5
  c.flow_matching.divergence = 'hutchinson'
  c.flow_matching.probes = 4

  c.optim.lr = 2e-3
  c.optim.warmup_steps = 100
  c.optim.weight_decay = 0.0

  c.train.log_every = 100
  c.train.checkpoint_every = 500
  # An ODE solve per example: model selection reads 2 batches of validation (the
  # same at every checkpoint); the test split is read whole, once.
  common.likelihood_evals(c, every=500, max_batches=2)
  c.evals.samples.num_samples = 100

  c.sample.num_samples = 100
  c.sample.solver = 'heun'  # 'euler' | 'heun' | 'rk4' | 'dopri5' (adaptive)
  c.sample.steps = 20  # dopri5: its first step is 1 / steps of the way
  c.sample.rtol = 1e-5  # dopri5's tolerances
  c.sample.atol = 1e-5
  c.sample.guidance = 2.0  # classifier-free: 0 = unconditional, 1 = conditional, > 1 guided

  if variant in TOY2D:
    c.data.name = f'toy2d/{variant}'
    c.data.batch_size = 256
    c.data.eval_batch_size = 1000
    c.model.net = 'mlp'
    c.model.conditional = False
    c.model.width = 256
    c.model.num_layers = 3
    c.model.dropout = 0.0
    c.flow_matching.point_scale = {'ring8': 1.0, 'grid25': 2.8, 'moons': 1.0,
                                   'swissroll': 1.5}[variant]
    c.flow_matching.divergence = 'exact'
    c.train.num_steps = 4000
    c.evals = ml_collections.ConfigDict()
    common.likelihood_evals(c, every=2000, max_batches=2)
    # The test NLL beside the true mixture's (ring8, grid25): the gap in nats.
    c.evals.density = ml_collections.ConfigDict(dict(kind='density', split='test', every=0))
    c.evals.samples = ml_collections.ConfigDict(dict(kind='samples', every=0, num_samples=2500))
    if variant in ('ring8', 'grid25'):
      c.evals.modes = ml_collections.ConfigDict(dict(kind='modes', every=0, num_samples=2500))
    c.sample.num_samples = 2500
    c.sample.guidance = 1.0
  elif variant in ('mnist', 'cifar10'):
    c.data.name = variant
    c.data.eval_split = 'test'
    c.data.eval_batch_size = 256
    c.model.channels = 128
    c.model.channel_mult = (1, 2, 2) if variant == 'mnist' else (1, 2, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = (7,) if variant == 'mnist' else (16,)
    c.model.dropout = 0.1
    c.model.patch = 4
    c.flow_matching.ema_decay = 0.9999
    c.data.batch_size = 128
    c.train.num_steps = 800_000 if variant == 'cifar10' else 100_000
    c.train.checkpoint_every = 10_000
    c.optim.lr = 2e-4
    c.optim.warmup_steps = 5000
    c.optim.schedule = 'constant'
    # No validation split in these datasets: the test split, 10 batches, every 20k steps.
    c.evals = ml_collections.ConfigDict()
    c.evals.test = ml_collections.ConfigDict(
        dict(kind='likelihood', split='test', every=20_000, max_batches=10))
    c.evals.samples = ml_collections.ConfigDict(dict(kind='samples', every=20_000,
                                                     num_samples=100))
  if smoke:
    return common.smoke(c, {**SMOKE, **SMOKE_DIGITS} if variant == 'digits' else SMOKE)
  return c
