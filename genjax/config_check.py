"""Checks a config's values before any compute is spent on it.

Every problem found is reported in one ConfigError that names the field, the
value and what is allowed, rather than as an error deep inside numpy or JAX.
The checks every family shares live here; a family adds its own (its module's
POSITIVE, NON_NEGATIVE, config_problems and data_problems, see
genjax.families). Fields a config does not have are skipped.
"""
import importlib.util

from genjax import families
from genjax.errors import ConfigError

# Sizes and counts that must be positive integers, wherever a config has them.
POSITIVE = (
    'data.batch_size', 'data.eval_batch_size', 'data.seq_len', 'train.num_steps',
    'train.log_every', 'train.stop_check_every', 'train.steps_per_call', 'train.microbatches',
    'model.width', 'model.num_layers', 'model.num_heads', 'model.mlp_ratio', 'model.hidden',
    'model.latent_dim', 'model.channels')
DTYPES = ('float32', 'bfloat16')
NON_NEGATIVE = ('train.checkpoint_every', 'train.max_seconds', 'sample.num_samples',
                'sample.top_k', 'optim.lr', 'optim.warmup_steps', 'optim.weight_decay',
                'model.dropout')


def get(config, dotted):
  """config's value at a dotted path, or None where it has no such field."""
  node = config
  for key in dotted.split('.'):
    if not hasattr(node, 'keys') or key not in node:
      return None
    node = node[key]
  return node


def is_number(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _family(config):
  name = get(config, 'family')
  return families.module(name) if name in families.REGISTRY else None


def problems(config):
  """A list of 'field=value: what is allowed' strings (empty if the config is fine)."""
  out, family = [], _family(config)
  for key in POSITIVE + getattr(family, 'POSITIVE', ()):
    value = get(config, key)
    values = value if isinstance(value, (tuple, list)) else (value,)
    if value is not None and any(not isinstance(v, int) or isinstance(v, bool) or v <= 0
                                 for v in values):
      out.append(f'{key}={value!r}: must be a positive integer' +
                 (' (each of them)' if isinstance(value, (tuple, list)) else ''))
  for key in NON_NEGATIVE + getattr(family, 'NON_NEGATIVE', ()):
    value = get(config, key)
    if value is not None and (not is_number(value) or value < 0):
      out.append(f'{key}={value!r}: must be >= 0')
  temperature = get(config, 'sample.temperature')
  if temperature is not None and (not is_number(temperature) or temperature < 0):
    out.append(f'sample.temperature={temperature!r}: must be >= 0 (0 = greedy)')
  top_p = get(config, 'sample.top_p')
  if top_p is not None and (not is_number(top_p) or not 0 < top_p <= 1):
    out.append(f'sample.top_p={top_p!r}: must be in (0, 1] (1 = off)')
  width, heads = get(config, 'model.width'), get(config, 'model.num_heads')
  if is_number(width) and is_number(heads) and heads > 0 and width > 0 and width % heads:
    out.append(f'model.width={width} is not divisible by model.num_heads={heads}')
  try:
    step_range(get(config, 'train.profile_steps'))
  except ValueError as e:
    out.append(str(e))
  dtype = get(config, 'model.dtype')
  if dtype is not None and dtype not in DTYPES:
    out.append(f'model.dtype={dtype!r}: {" or ".join(map(repr, DTYPES))} (the computation\'s; '
               'parameters stay float32)')
  mode = get(config, 'log.wandb_mode')
  if mode not in (None, '', 'online', 'offline', 'disabled'):
    out.append(f"log.wandb_mode={mode!r}: 'online', 'offline', 'disabled' or '' ($WANDB_MODE)")
  if get(config, 'log.wandb') and importlib.util.find_spec('wandb') is None:
    out.append(f"log.wandb={get(config, 'log.wandb')!r}: wandb is not installed "
               "(pip install 'genjax-families[wandb]')")
  if hasattr(family, 'config_problems'):
    out += family.config_problems(config)
  return out


def step_range(value):
  """train.profile_steps: 'A,B' -> (A, B) with 0 <= A < B; '' or None -> None."""
  if not value:
    return None
  try:
    a, b = (int(v) for v in str(value).split(','))
  except ValueError:
    a = b = -1
  if not 0 <= a < b:
    raise ValueError(f"train.profile_steps={value!r}: give 'A,B', two steps with 0 <= A < B, "
                     'for a trace of steps A to B-1')
  return a, b


def check(config):
  found = problems(config)
  if found:
    raise ConfigError('bad config: ' + '; '.join(found))


def data_problems(config, info, num_devices=1):
  """Problems between a config and its dataset (`info`, a DatasetInfo), found
  once the dataset is opened and before the model is built: a modality the
  family does not model, then the family's own (image sides its architecture
  cannot halve, a per-device batch it cannot split, ...)."""
  name, family = get(config, 'family'), _family(config)
  if family is None:
    return []
  if info.modality not in family.MODALITIES:
    return [f'data.name={info.name!r} holds {info.modality}; the {name} family models '
            f'{" or ".join(family.MODALITIES)}']
  found = []
  k, batch = get(config, 'train.microbatches'), get(config, 'data.batch_size')
  if is_number(k) and is_number(batch) and k > 1 and (batch // num_devices) % k:
    found.append(f'train.microbatches={k} must divide the per-device batch of '
                 f'{batch // num_devices} (data.batch_size={batch} over {num_devices} device(s))')
  if hasattr(family, 'data_problems'):
    found += family.data_problems(config, info, num_devices)
  return found


def check_data(config, info, num_devices=1):
  found = data_problems(config, info, num_devices)
  if found:
    raise ConfigError('bad config for this dataset: ' + '; '.join(found))
