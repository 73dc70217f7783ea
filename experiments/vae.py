"""Variational autoencoders: ELBO training, IWAE bounds, latent tools, anomaly scores.

  python launch.py --config=experiments/vae.py:digits --workdir=/tmp/vae_digits
      Conv VAE on 8x8 digits: 1.99 bits/dim (IWAE, K = 1000) on test.
  python launch.py --config=experiments/vae.py:digits_z2 --workdir=/tmp/vae_digits_z2
      The same with a 2-D latent, for the latent map coloured by label (not run to the end).
  python launch.py --config=experiments/vae.py:digits_holdout --workdir=/tmp/vae_holdout
      Digits with class 9 left out of training: ROC AUC 0.78 for the 9s as anomalies.
  python launch.py --config=experiments/vae.py:toy2d --workdir=/tmp/vae_toy2d
      toy2d/ring8 with MLPs and a Gaussian decoder (only its smoke version was run).
  python launch.py --config=experiments/vae.py:mnist --workdir=/tmp/vae_mnist
  python launch.py --config=experiments/vae.py:cifar10 --workdir=/tmp/vae_cifar10
      Discretised logistic decoders on 256-level images; need the dataset (internet).

Measurements: README.md, Results. `:digits,smoke` is the same experiment shrunk to 4 steps.
"""
import ml_collections

from genjax.experiments import common

VARIANTS = ('digits', 'digits_z2', 'digits_holdout', 'toy2d', 'mnist', 'cifar10')
# What ',smoke' changes beyond experiments.common.SMOKE.
SMOKE = {'model.hidden': 32, 'model.channels': (8,), 'model.latent_dim': 4,
         'model.eval_k': 8, 'model.eval_ks': (1, 4, 8), 'model.eval_chunk': 4,
         'model.score_k': 4, 'model.kl_warmup_steps': 2}


def get_config(arg='digits'):
  variant, smoke = common.parse(arg, VARIANTS, 'experiments/vae.py')
  c = common.base('vae', 'digits', batch_size=64, num_steps=600)

  c.model = ml_collections.ConfigDict()
  c.model.likelihood = 'auto'  # categorical (<= 64 levels), logistic (images), gaussian (points)
  c.model.latent_dim = 16
  c.model.channels = (32,)  # conv encoder: each halves H and W; the decoder mirrors it
  c.model.decoder = 'conv'  # images: 'conv' (mirrors the encoder) or 'mlp' (overfits digits)
  c.model.hidden = 256
  c.model.num_layers = 2
  c.model.dropout = 0.0
  c.model.dtype = 'float32'  # compute dtype ('bfloat16': mixed precision); params stay float32
  c.model.beta = 1.0  # weight of the KL (beta-VAE)
  c.model.kl_warmup_steps = 200  # beta rises linearly from 0
  c.model.train_k = 4  # 1: the ELBO; > 1: the IWAE bound with that many samples
  c.model.eval_k = 1000  # K of the reported bound ('nll')
  c.model.eval_ks = (1, 64, 1000)  # also reported as nll_k<K> (K = 1 is the ELBO)
  c.model.eval_chunk = 100  # importance samples decoded at once (memory)
  c.model.score_k = 64  # anomaly score: -IWAE bound with this K
  c.model.exclude_label = -1  # >= 0: that class gets zero weight in training

  c.data.eval_batch_size = 512
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.train.checkpoint_every = 300
  c.train.log_every = 100
  # Tuned on validation (separate runs, K = 64): 1,000 training digits overfit
  # after ~500 steps at full learning rate (the bound rises again); an MLP
  # decoder or decoder dropout did worse. Here validation runs at the end only
  # (K = 1000 bounds cost more than the training on a CPU).
  common.likelihood_evals(c, every=0)
  # The test split: bounds at K = 1 (the ELBO) and K = model.eval_k, in nats and bits/dim;
  # figures: reconstructions, prior samples, interpolations, the latent map; anomaly:
  # ROC AUCs of the test split against noise, inverted images and the held-out class.
  c.evals.figures = ml_collections.ConfigDict(dict(kind='figures', every=0, split='test',
                                                   num_examples=512))
  c.evals.anomaly = ml_collections.ConfigDict(dict(kind='anomaly', every=0, split='test',
                                                   held_out_label=-1, max_examples=-1))
  c.sample.decode = 'mean'  # samples show E[x|z]; 'draw' samples x ~ p(x|z) too

  if variant == 'digits_z2':
    c.model.latent_dim = 2
  if variant == 'digits_holdout':
    c.model.exclude_label = 9
    c.evals.anomaly.held_out_label = 9
  if variant == 'toy2d':
    c.data.name = 'toy2d/ring8'
    c.data.batch_size = 256
    c.data.eval_batch_size = 1000
    c.model.latent_dim = 2
    c.model.channels = ()
    c.model.hidden = 128
    c.train.num_steps = 3000
    common.likelihood_evals(c, every=1000, max_batches=2)
    c.evals.figures.num_examples = 1000
    c.evals.samples.num_samples = 2000
    c.evals.modes = ml_collections.ConfigDict(dict(kind='modes', every=0, num_samples=2500))
  if variant in ('mnist', 'cifar10'):
    c.data.name = variant
    c.data.batch_size = 128
    c.data.eval_batch_size = 256
    c.data.eval_split = 'test'
    c.model.latent_dim = 32 if variant == 'mnist' else 128
    c.model.channels = (32, 64) if variant == 'mnist' else (64, 128, 256)
    c.model.hidden = 512
    c.model.eval_ks = (1, 64, 1000)
    c.model.eval_chunk = 50
    c.model.train_k = 1
    c.train.num_steps = 50_000
    c.train.checkpoint_every = 5000
    # These datasets have no validation split: periodic checks read a few test batches.
    common.likelihood_evals(c, every=5000, max_batches=4, test_split='test')
    c.evals.validation.split = 'test'
    c.evals.figures.num_examples = 256
  return common.smoke(c, SMOKE) if smoke else c
