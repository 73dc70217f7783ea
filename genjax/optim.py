"""Optimizers and learning-rate schedules built from `config.optim`."""
import jax
import optax


def learning_rate_schedule(cfg, num_steps):
  warmup = min(cfg.warmup_steps, num_steps)
  if cfg.schedule == 'cosine':
    decay = optax.cosine_decay_schedule(cfg.lr, max(num_steps - warmup, 1), alpha=cfg.min_lr_ratio)
  elif cfg.schedule == 'constant':
    decay = optax.constant_schedule(cfg.lr)
  else:
    raise ValueError(f"optim.schedule must be 'cosine' or 'constant', got {cfg.schedule!r}")
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])


_DECAYED = ('kernel', 'embedding', 'pos_embed')


def _decay_mask(params):
  # Decay weight matrices and embeddings by name; leave biases (some are 3-D,
  # like the fused qkv bias) and norm scales alone.
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) in _DECAYED, params)


def make_optimizer(cfg, num_steps):
  """Returns (optax transformation, schedule)."""
  schedule = learning_rate_schedule(cfg, num_steps)
  if cfg.name == 'adamw':
    opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=_decay_mask)
  elif cfg.name == 'adam':
    opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2)
  else:
    raise ValueError(f"optim.name must be 'adamw' or 'adam', got {cfg.name!r}")
  if cfg.grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
  return opt, schedule
