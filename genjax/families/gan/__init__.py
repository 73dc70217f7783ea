"""GAN family: a generator G and a discriminator (critic) D trained against
each other, on images (DCGAN-style convnets) or 2-D points (MLPs).

One train step runs `gan.n_critic` D updates, each on its own slice of the
batch and fresh fakes, then one G update; G and D have their own Adam and
learning rate (optim.g_lr, optim.d_lr). The loss is gan.loss (see `losses`),
with an optional gradient penalty (gan.gp_weight, WGAN-GP) and R1 penalty on
real data (gan.r1_weight). Against mode collapse: packing (model.pack, PacGAN)
and an EMA copy of G for sampling (gan.ema).

A GAN has no likelihood; its eval sums are the mean D output on held-out real
data and on fresh fakes (a D that overfits scores held-out data like fakes).
Sample quality is measured by the shared evaluators: genjax.evals.modes on
toy2d, genjax.evals.classifier on digits.

Noise is a function of the example's index in the global batch
(`base.example_keys`), and D step i reads examples i, i + n_critic, ..., so
training on 4 devices equals training on 1.
"""
import types

import flax
import jax
import jax.numpy as jnp
import numpy as np

from genjax import optim
from genjax.errors import ConfigError
from genjax.families import base
from genjax.families.gan import losses, networks


MODALITIES = ('image', 'points')
POSITIVE = ('model.g_width', 'model.d_width', 'model.pack', 'gan.n_critic')
NON_NEGATIVE = ('sample.truncation',)


def data_problems(config, info, num_devices=1):
  """Per-device batches that the critic steps and packing cannot split."""
  del info
  out = []
  group = (config.gan.get('n_critic') or 1) * (config.model.get('pack') or 1)
  names = 'gan.n_critic * model.pack'
  if base.microbatches(config) > 1:  # each critic step's examples, in microbatches of packs
    group *= base.microbatches(config)
    names += ' * train.microbatches'
  batch = config.data.batch_size
  if isinstance(batch, int) and batch % num_devices == 0 and (batch // num_devices) % group:
    out.append(f'data.batch_size={batch} over {num_devices} device(s) is {batch // num_devices} '
               f'per device, which must be a multiple of {names} = {group}')
  pack, eval_batch = config.model.get('pack') or 1, config.data.eval_batch_size
  if isinstance(eval_batch, int) and eval_batch % num_devices == 0 \
      and (eval_batch // num_devices) % pack:
    out.append(f'data.eval_batch_size={eval_batch} over {num_devices} device(s) is '
               f'{eval_batch // num_devices} per device, which must be a multiple of '
               f'model.pack = {pack}')
  return out


@flax.struct.dataclass
class GANState:
  step: jnp.ndarray
  g_params: dict
  d_params: dict
  g_ema: dict  # exponential moving average of g_params (gan.ema); sampling uses it
  g_opt_state: tuple
  d_opt_state: tuple


def make_optimizers(config):
  """(G optimizer, D optimizer): config.optim with lr = optim.g_lr / optim.d_lr.
  D's schedule counts its own updates (n_critic per train step)."""
  opts = []
  for lr, steps in ((config.optim.g_lr, config.train.num_steps),
                    (config.optim.d_lr, config.train.num_steps * config.gan.n_critic)):
    cfg = types.SimpleNamespace(**{**config.optim.to_dict(), 'lr': lr})
    opts.append(optim.make_optimizer(cfg, steps)[0])
  return tuple(opts)


def to_model(batch, info, scale=1.0):
  """The batch's data as G's output space: images in [-1, 1], points divided
  by `scale` (model.data_scale: grid25's +-4 become +-1)."""
  if info.modality == 'image':
    return batch['image'].astype(jnp.float32) / (info.num_levels - 1) * 2.0 - 1.0
  return batch['x'].astype(jnp.float32) / scale


def from_model(x, info, scale=1.0):
  if info.modality == 'image':
    return jnp.clip((x + 1.0) / 2.0 * (info.num_levels - 1), 0.0, info.num_levels - 1)
  return x * scale


def per_example(rng, draw_one, n):
  """n draws, the i-th from the key of example i of the global batch
  (`base.example_keys`), so that the device count changes no draw."""
  return jax.vmap(draw_one)(base.example_keys(rng, n))


class Steps:
  """The pure pieces of a train step: `d_step` and `g_step` each update one
  network and leave the other alone; `train_step` is n_critic of the first and
  one of the second."""

  def __init__(self, config, info):
    self.config, self.info = config, info
    self.gen, self.disc = networks.make(config, info)
    self.g_tx, self.d_tx = make_optimizers(config)
    self.latent = config.model.latent_dim
    self.pack = config.model.pack
    self.scale = config.model.get('data_scale', 1.0)
    self.cond = bool(config.model.conditional)
    g = config.gan
    self.kind, self.n_critic = g.loss, g.n_critic
    self.microbatches = base.microbatches(config)
    self.gp_weight, self.r1_weight, self.ema = g.gp_weight, g.r1_weight, g.ema
    losses._check(self.kind)  # pylint: disable=protected-access

  def generate(self, g_params, z, label=None):
    return self.gen.apply({'params': g_params}, z, label if self.cond else None)

  def discriminate(self, d_params, x, label=None):
    """D outputs, one per pack of `pack` consecutive examples."""
    return self.disc.apply({'params': d_params}, networks.pack(x, self.pack),
                           label if self.cond else None)

  def init(self, rng, batch):
    x = to_model(batch, self.info, self.scale)[:max(self.pack, 1)]
    label = batch['label'][:x.shape[0]] if self.cond else None
    kg, kd = jax.random.split(rng)
    z = jnp.zeros((x.shape[0], self.latent))
    g_params = jax.jit(self.gen.init)(kg, z, label)['params']
    d_params = jax.jit(self.disc.init)(kd, networks.pack(x, self.pack), label)['params']
    return GANState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                    g_ema=g_params, g_opt_state=self.g_tx.init(g_params),
                    d_opt_state=self.d_tx.init(d_params))

  def _z(self, rng, n):
    return per_example(rng, lambda k: jax.random.normal(k, (self.latent,)), n)

  def d_step(self, state, real, label, rng):
    """One D update on `real` against fresh fakes; G is not touched."""
    k_z, k_eps = jax.random.split(rng)
    fake = self.generate(state.g_params, self._z(k_z, real.shape[0]), label)
    fake = jax.lax.stop_gradient(fake)
    eps = per_example(k_eps, lambda k: jax.random.uniform(k, ()), real.shape[0] // self.pack)

    def loss_fn(d_params, b):
      d_fn = lambda x: self.disc.apply({'params': d_params}, x, b['label'])
      real_p, fake_p, eps = b['real'], b['fake'], b['eps']
      l_real, l_fake = d_fn(real_p), d_fn(fake_p)
      loss = losses.d_loss(self.kind, l_real, l_fake)
      aux = {'d_real': jnp.mean(l_real), 'd_fake': jnp.mean(l_fake)}
      if self.gp_weight > 0:
        aux['gp'] = losses.gradient_penalty(d_fn, real_p, fake_p, eps)
        loss = loss + self.gp_weight * aux['gp']
      if self.r1_weight > 0:
        aux['r1'] = losses.r1_penalty(d_fn, real_p)
        loss = loss + 0.5 * self.r1_weight * aux['r1']
      return loss, aux

    # Microbatches of whole packs (a conditional D has pack 1: one label a pack).
    parts = dict(real=networks.pack(real, self.pack), fake=networks.pack(fake, self.pack),
                 eps=eps, label=label if self.cond else None)
    d_params, d_opt, metrics, aux = base.update(loss_fn, state.d_params, state.d_opt_state,
                                                self.d_tx, batch=parts,
                                                microbatches=self.microbatches, has_aux=True,
                                                prefix='d_')
    return state.replace(d_params=d_params, d_opt_state=d_opt), {**metrics, **aux}

  def g_step(self, state, n, label, rng):
    """One G update on n fresh fakes against the current D; D is not touched."""
    z = self._z(rng, n)

    def loss_fn(g_params, b):
      fake = self.generate(g_params, b['z'], b['label'])
      return losses.g_loss(self.kind, self.discriminate(state.d_params, fake, b['label']))

    g_params, g_opt, metrics, _ = base.update(
        loss_fn, state.g_params, state.g_opt_state, self.g_tx,
        batch=dict(z=z, label=label if self.cond else None), microbatches=self.microbatches,
        prefix='g_')
    g_ema = base.ema(state.g_ema, g_params, self.ema, state.step)
    return state.replace(g_params=g_params, g_opt_state=g_opt, g_ema=g_ema), metrics

  def train_step(self, state, batch, rng):
    x = to_model(batch, self.info, self.scale)
    B, n = x.shape[0], self.n_critic
    if B % (n * self.pack * self.microbatches):
      raise ConfigError(f'the per-device batch ({B}) must be a multiple of gan.n_critic * '
                       f'model.pack * train.microbatches = {n * self.pack * self.microbatches}')
    label = batch['label'] if self.cond else jnp.zeros((B,), jnp.int32)
    # D step i reads examples i, i+n, i+2n, ...: the same examples whatever the device count.
    real_NxC = x.reshape((B // n, n) + x.shape[1:]).swapaxes(0, 1)
    label_NxC = label.reshape(B // n, n).T

    def critic(state, inputs):
      i, real, lab = inputs
      return self.d_step(state, real, lab, jax.random.fold_in(rng, i))

    state, d_metrics = jax.lax.scan(critic, state, (jnp.arange(n), real_NxC, label_NxC))
    state, g_metrics = self.g_step(state, B // n, label_NxC[0], jax.random.fold_in(rng, n))
    metrics = {k: jnp.mean(v) for k, v in d_metrics.items()}
    metrics.update(g_metrics)
    return state.replace(step=state.step + 1), metrics

  def eval_step(self, state, batch, rng):
    """Sums of D on held-out real data and on as many fresh fakes (EMA G)."""
    x = to_model(batch, self.info, self.scale)
    B = x.shape[0]
    label = batch['label'] if self.cond else None
    fake = self.generate(state.g_ema, self._z(rng, B), label)
    l_real, l_fake = self.discriminate(state.d_params, x, label), self.discriminate(
        state.d_params, fake, label)
    # A pack counts when all its examples are real (not the last batch's padding).
    w = jnp.all(batch['mask'].reshape(-1, self.pack), axis=1).astype(jnp.float32) * self.pack
    sums = {'d_real': jnp.sum(w * l_real), 'd_fake': jnp.sum(w * l_fake), 'examples': jnp.sum(w)}
    if self.kind != 'wgan_gp':  # logits: how often D is right
      sums['d_real_acc'] = jnp.sum(w * (l_real > 0))
      sums['d_fake_acc'] = jnp.sum(w * (l_fake < 0))
    return sums


def draw_z(rng, n, latent, truncation=0.0):
  """Standard normal z, or truncated to [-t, t] when truncation t > 0."""
  if truncation > 0:
    return jax.random.truncated_normal(rng, -truncation, truncation, (n, latent))
  return jax.random.normal(rng, (n, latent))


def slerp(z0, z1, t):
  """Spherical interpolation (the path stays where Gaussian z has its mass)."""
  n0, n1 = jnp.linalg.norm(z0, axis=-1, keepdims=True), jnp.linalg.norm(z1, axis=-1, keepdims=True)
  omega = jnp.arccos(jnp.clip(jnp.sum(z0 * z1, -1, keepdims=True) / (n0 * n1), -1.0, 1.0))
  so = jnp.maximum(jnp.sin(omega), 1e-6)
  return (jnp.sin((1.0 - t) * omega) / so) * z0 + (jnp.sin(t * omega) / so) * z1


def _judge_collapse(table, data):
  """Collapse: the GAN's recall or class entropy is the lowest of the families.
  Instability: its loss roughness, or its spread across seeds, is the highest."""
  gans = [r for r in table.values() if r['family'] == 'gan']
  if not gans:
    return 'no GAN in the comparison', 'not measured'
  gan, evidence, found = gans[0], [], []
  others = [r for r in table.values() if r['family'] != 'gan']
  for key, name in (('recall', 'recall'), ('entropy', 'class entropy'), ('modes', 'modes'),
                    ('high_quality', 'high-quality share')):
    if np.isfinite(gan.get(key, np.nan)) and any(key in r for r in others):
      lowest = gan[key] <= min(r[key] for r in others if key in r)
      evidence.append(f'{name} {gan[key]:.3f} ({"the lowest" if lowest else "not the lowest"}'
                      + (f', data {data[key]:.3f}' if data and key in data else '') + ')')
      found.append(('collapse', lowest))
  rough = [r['roughness'] for r in others if np.isfinite(r.get('roughness', np.nan))]
  if np.isfinite(gan.get('roughness', np.nan)) and rough:
    highest = gan['roughness'] >= max(rough)
    evidence.append(f"loss roughness {gan['roughness']:.3f} "
                    f"({'the highest' if highest else 'not the highest'})")
    found.append(('unstable', highest))
  spread = [k for k in ('fd_seed_std', 'modes_seed_std') if k in gan]
  if spread and gan.get('seeds', 1) > 1:
    key = spread[0]
    highest = gan[key] >= max(r.get(key, 0.0) for r in others)
    evidence.append(f"spread across {gan['seeds']} seeds {gan[key]:.3f} "
                    f"({'the highest' if highest else 'not the highest'})")
    found.append(('unstable', highest))
  if not found:
    return 'no sample metrics', 'not measured'
  collapse = any(v for k, v in found if k == 'collapse')
  unstable = any(v for k, v in found if k == 'unstable')
  verdict = ('supported' if collapse and unstable else
             'partly supported' if collapse or unstable else 'not supported')
  return '; '.join(evidence), verdict


CLAIM = base.Claim('GANs are unstable and collapse', _judge_collapse)


def build(config, info):
  steps = Steps(config, info)
  truncation = config.sample.get('truncation', 0.0)
  classes = info.num_classes if steps.cond else 0
  _gen = jax.jit(lambda params, z, label: from_model(steps.generate(params, z, label), info,
                                                     steps.scale))

  def labels(n):
    return jnp.arange(n, dtype=jnp.int32) % classes if classes else jnp.zeros((n,), jnp.int32)

  def as_batch(x, label):
    out = {'image': np.asarray(x)} if info.modality == 'image' else {'x': np.asarray(x)}
    if classes:
      out['label'] = np.asarray(label)
    return out

  def sample(state, rng, num_samples):
    z = draw_z(rng, num_samples, steps.latent, truncation)
    return as_batch(_gen(state.g_ema, z, labels(num_samples)), labels(num_samples))

  def interpolate(state, rng, num_paths=8, num_steps=8):
    """G along slerp paths between pairs of z: (num_paths * num_steps, ...) in
    path-major order, each path with a fixed label."""
    k0, k1 = jax.random.split(rng)
    z0, z1 = (draw_z(k, num_paths, steps.latent, truncation) for k in (k0, k1))
    t = jnp.linspace(0.0, 1.0, num_steps)[None, :, None]
    z = slerp(z0[:, None], z1[:, None], t).reshape(-1, steps.latent)
    lab = jnp.repeat(labels(num_paths), num_steps)
    return as_batch(_gen(state.g_ema, z, lab), lab)

  def figures(state, rng, batch):
    if info.modality != 'image':
      return {}
    k_s, k_i = jax.random.split(rng)
    s = sample(state, k_s, 64)
    paths = interpolate(state, k_i)
    vr = info.value_range
    return {'samples': {'images': s['image'], 'value_range': vr, 'rows_of': s.get('label')},
            'interpolation': {'images': paths['image'], 'value_range': vr, 'cols': 8},
            'real': {'images': batch['image'], 'value_range': vr}}

  return base.Family(
      name='gan', init=steps.init, train_step=steps.train_step, eval_step=steps.eval_step,
      sample=sample, likelihood='none', headline='d_loss', finite=('g_loss', 'd_loss'),
      state_fields=('model',),
      advice=('lower optim.g_lr and optim.d_lr (or raise gan.gp_weight / gan.r1_weight, or use '
              "gan.loss='nonsaturating')"),
      tools={'interpolate': interpolate, 'figures': figures, 'steps': steps, 'claim': CLAIM,
             'network_evals': 1,  # a sample is one pass of G
             'generate': lambda params, z, label=None: _gen(params, z, label)})
