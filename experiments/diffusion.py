"""Diffusion (DDPM / DDIM) on digits, toy2d and (with internet) mnist, cifar10.

  python launch.py --config=experiments/diffusion.py:digits --workdir=/tmp/diff_digits
      Class-conditional U-Net: test bound 2.19 bits/dim.
  python launch.py --config=experiments/diffusion.py:grid25 --workdir=/tmp/diff_grid25
      MLP denoiser on 25 Gaussians (ring8, moons, swissroll likewise): 25/25 modes; 5 min 15 s.
  python launch.py --config=experiments/diffusion.py:mnist --workdir=/tmp/diff_mnist
  python launch.py --config=experiments/diffusion.py:cifar10 --workdir=/tmp/diff_cifar10
      Research scale (DDPM's U-Net); needs the dataset and an accelerator.

Measurements, and what makes the bound tight: README.md, Results. `:digits,smoke`
is the same experiment shrunk to a few steps. `--config.diffusion.ode_likelihood=True`
reports the probability-flow ODE's likelihood ('nll_ode', 'bpd_ode') beside the bound.
"""
import ml_collections

from genjax.experiments import common

VARIANTS = ('digits', 'ring8', 'grid25', 'moons', 'swissroll', 'mnist', 'cifar10')
TOY2D = ('ring8', 'grid25', 'moons', 'swissroll')
# What ',smoke' changes beyond experiments.common.SMOKE.
SMOKE = {'model.channels': 8, 'model.num_res_blocks': 1, 'model.channel_mult': (1, 2),
         'model.width': 32, 'model.num_layers': 1, 'model.num_heads': 2, 'model.num_steps': 20,
         'diffusion.eval_t_samples': 2, 'diffusion.ode_steps': 2, 'diffusion.ode_probes': 2,
         'sample.ddim_steps': 5, 'sample.figure_ddim_steps': (5,), 'data.batch_size': 16}
# ',smoke' on digits: one resolution with its attention (the larger images keep
# the down and up path), which halves the U-Net's compile; more channels than
# GroupNorm's 8 groups, which would otherwise remove the conditioning's bias.
SMOKE_DIGITS = {'model.channels': 16, 'model.channel_mult': (1,), 'model.attn_resolutions': (8,)}


def network_config():
  """The digits networks, which flow matching shares (config.model)."""
  m = ml_collections.ConfigDict()
  m.net = 'unet'  # 'unet' | 'dit' | 'mlp'
  m.conditional = True  # class labels through an embedding added to the time embedding
  # U-Net
  m.channels = 32
  m.channel_mult = (1, 2)
  m.num_res_blocks = 1
  m.attn_resolutions = (4,)
  m.dropout = 0.1
  # DiT (patch transformer) and MLP
  m.patch = 2
  m.width = 128
  m.num_layers = 4
  m.num_heads = 4
  m.mlp_ratio = 4
  m.dtype = 'float32'  # compute dtype ('bfloat16': mixed precision); params stay float32
  return m


def get_config(arg='digits'):
  variant, smoke = common.parse(arg, VARIANTS, 'experiments/diffusion.py')
  c = common.base('diffusion', 'digits', batch_size=64, num_steps=2000)

  c.model = network_config()
  c.model.schedule = 'linear'  # 'linear' | 'cosine'
  c.model.num_steps = 1000  # T
  c.model.target = 'lattice'  # 'eps' | 'x0' | 'v' | 'lattice' (images)

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.loss = 'vlb'  # 'eps_mse' | 'vlb' (the bound itself, VDM-style) | 'hybrid'
  c.diffusion.hybrid_weight = 1e-3
  c.diffusion.p_uncond = 0.2  # label dropout (classifier-free guidance)
  c.diffusion.ema_decay = 0.995
  c.diffusion.eval_t_samples = 16  # draws of t per example for the bound
  c.diffusion.eval_conditional = True
  c.diffusion.point_scale = 1.0  # points are divided by this
  # The probability-flow ODE's likelihood beside the bound (eval 'nll_ode'):
  # RK4 steps equal in log-SNR from step 1 to T, or 'dopri5' (adaptive, to the
  # tolerances), and the divergence, 'exact' (D passes per evaluation) or
  # 'hutchinson' with this many probes.
  c.diffusion.ode_likelihood = False
  c.diffusion.ode_solver = 'rk4'  # 'euler' | 'heun' | 'rk4' | 'dopri5'
  c.diffusion.ode_steps = 32  # dopri5: its first step is 1 / ode_steps of the way
  c.diffusion.ode_rtol = 1e-5
  c.diffusion.ode_atol = 1e-5
  c.diffusion.ode_divergence = 'hutchinson'
  c.diffusion.ode_probes = 4

  c.optim.lr = 2e-3
  c.optim.warmup_steps = 100
  c.optim.weight_decay = 0.0

  c.train.log_every = 100
  c.train.checkpoint_every = 500
  common.likelihood_evals(c, every=500)
  c.evals.samples.num_samples = 100
  # DDPM against DDIM (network evaluations per sample in the file name), inpainting,
  # denoising and the reverse process, under figures/.
  c.evals.figures = ml_collections.ConfigDict(dict(kind='figures', every=0, num_examples=8))

  c.sample.num_samples = 100
  c.sample.sampler = 'ddim'  # 'ddpm' (T network passes, x2 with guidance) | 'ddim'
  c.sample.ddim_steps = 100
  c.sample.figure_ddim_steps = (50, 10)
  c.sample.eta = 0.0
  c.sample.guidance = 2.0  # classifier-free: 0 = unconditional, 1 = conditional, > 1 guided
  c.sample.variance = 'small'  # DDPM: tilde beta_t ('small') or beta_t ('large')
  c.sample.clip = True  # clip x0_hat to [-1, 1] (images)

  if variant in TOY2D:
    c.data.name = f'toy2d/{variant}'
    c.data.batch_size = 256
    c.data.eval_batch_size = 1000
    c.model.net = 'mlp'
    c.model.target = 'eps'
    c.model.conditional = False
    c.model.width = 256
    c.model.num_layers = 3
    c.model.dropout = 0.0
    c.diffusion.loss = 'eps_mse'
    c.diffusion.ode_divergence = 'exact'
    c.diffusion.point_scale = {'ring8': 1.0, 'grid25': 2.8, 'moons': 1.0, 'swissroll': 1.5}[variant]
    c.train.num_steps = 4000
    c.evals = ml_collections.ConfigDict()
    common.likelihood_evals(c, every=2000, max_batches=2)
    c.evals.samples = ml_collections.ConfigDict(dict(kind='samples', every=0, num_samples=2500))
    if variant in ('ring8', 'grid25'):
      c.evals.modes = ml_collections.ConfigDict(dict(kind='modes', every=0, num_samples=2500))
    c.sample.num_samples = 2500
    c.sample.sampler = 'ddpm'
    c.sample.guidance = 1.0
    c.sample.clip = False
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
    c.model.conditional = True
    c.diffusion.ema_decay = 0.9999
    c.diffusion.eval_t_samples = 4
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
    c.evals.figures = ml_collections.ConfigDict(dict(kind='figures', every=0, num_examples=8,
                                                     split='test'))
  if smoke:
    return common.smoke(c, {**SMOKE, **SMOKE_DIGITS} if variant == 'digits' else SMOKE)
  return c
