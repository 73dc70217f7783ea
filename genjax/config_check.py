"""Checks a config's values before any compute is spent on it.

Every problem found is reported in one ConfigError that names the field, the
value and what is allowed, rather than as an error deep inside numpy or JAX.
Fields a config does not have are skipped, so one check serves every family.
"""
from genjax.errors import ConfigError

# Sizes and counts that must be positive integers, wherever a config has them.
POSITIVE = (
    'data.batch_size', 'data.eval_batch_size', 'data.seq_len', 'train.num_steps',
    'train.log_every', 'train.stop_check_every', 'train.steps_per_call', 'model.width',
    'model.num_layers', 'model.num_heads', 'model.mlp_ratio',
    'model.hidden', 'model.latent_dim', 'model.channels', 'model.num_steps', 'model.g_width',
    'model.d_width', 'model.levels', 'model.steps', 'model.num_res_blocks', 'model.patch',
    'model.pack', 'gan.n_critic', 'sample.length', 'sample.ddim_steps', 'sample.steps')
NON_NEGATIVE = ('train.checkpoint_every', 'train.max_seconds', 'sample.num_samples',
                'sample.top_k', 'sample.guidance', 'sample.truncation', 'optim.lr',
                'optim.warmup_steps', 'optim.weight_decay', 'model.dropout', 'model.block_size')


def _get(config, dotted):
  node = config
  for key in dotted.split('.'):
    if not hasattr(node, 'keys') or key not in node:
      return None
    node = node[key]
  return node


def _is_number(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def problems(config):
  """A list of 'field=value: what is allowed' strings (empty if the config is fine)."""
  out = []
  for key in POSITIVE:
    value = _get(config, key)
    values = value if isinstance(value, (tuple, list)) else (value,)
    if value is not None and any(not isinstance(v, int) or isinstance(v, bool) or v <= 0
                                 for v in values):
      out.append(f'{key}={value!r}: must be a positive integer' +
                 (' (each of them)' if isinstance(value, (tuple, list)) else ''))
  for key in NON_NEGATIVE:
    value = _get(config, key)
    if value is not None and (not _is_number(value) or value < 0):
      out.append(f'{key}={value!r}: must be >= 0')
  temperature = _get(config, 'sample.temperature')
  if temperature is not None and (not _is_number(temperature) or temperature < 0):
    out.append(f'sample.temperature={temperature!r}: must be >= 0 (0 = greedy)')
  top_p = _get(config, 'sample.top_p')
  if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
    out.append(f'sample.top_p={top_p!r}: must be in (0, 1] (1 = off)')
  steps, T = _get(config, 'sample.ddim_steps'), _get(config, 'model.num_steps')
  if (_get(config, 'family') == 'diffusion' and _is_number(steps) and _is_number(T)
      and steps > T):
    out.append(f'sample.ddim_steps={steps}: at most model.num_steps (T = {T})')
  loss = _get(config, 'model.loss')
  if _get(config, 'family') == 'masked_diffusion' and loss not in (None, 'elbo', 'masked_mean'):
    out.append(f"model.loss={loss!r}: must be 'elbo' or 'masked_mean'")
  block, seq_len = _get(config, 'model.block_size'), _get(config, 'data.seq_len')
  if (_get(config, 'family') == 'masked_diffusion' and isinstance(block, int) and block > 0
      and isinstance(seq_len, int) and seq_len > 0 and seq_len % block):
    out.append(f'model.block_size={block}: must divide data.seq_len={seq_len} (0 = one block)')
  width, heads = _get(config, 'model.width'), _get(config, 'model.num_heads')
  if _is_number(width) and _is_number(heads) and heads > 0 and width > 0 and width % heads:
    out.append(f'model.width={width} is not divisible by model.num_heads={heads}')
  return out


def check(config):
  found = problems(config)
  if found:
    raise ConfigError('bad config: ' + '; '.join(found))


# What each registered family models; a family not named here is not checked.
MODALITIES = {'autoregressive': ('text', 'image'), 'masked_diffusion': ('text',),
              'diffusion': ('image', 'points'), 'gan': ('image', 'points'),
              'vae': ('image', 'points'), 'flow': ('image', 'points')}


def data_problems(config, info, num_devices=1):
  """Problems between a config and its dataset (`info`, a DatasetInfo), found
  once the dataset is opened and before the model is built: a modality the
  family does not model, image sides the architecture cannot halve or cut into
  patches, a per-device batch the GAN cannot split."""
  family, out = _get(config, 'family'), []
  allowed = MODALITIES.get(family)
  if allowed and info.modality not in allowed:
    return [f'data.name={info.name!r} holds {info.modality}; the {family} family models '
            f'{" or ".join(allowed)}']
  if info.modality == 'image':
    H, W = info.shape[:2]
    net = _get(config, 'model.net')
    if family == 'diffusion' and net == 'unet':
      mult = tuple(_get(config, 'model.channel_mult') or ())
      f = 2 ** max(len(mult) - 1, 0)
      if H % f or W % f:
        out.append(f'model.channel_mult={mult} halves the image {len(mult) - 1} times, so its '
                   f'sides must be multiples of {f}; {info.name!r} images are {H}x{W}')
    if family == 'diffusion' and net == 'dit':
      patch = _get(config, 'model.patch')
      if _is_number(patch) and patch > 0 and (H % patch or W % patch):
        out.append(f'model.patch={patch} must divide the image sides; {info.name!r} images are '
                   f'{H}x{W}')
    if family == 'flow':
      levels = _get(config, 'model.levels')
      if _is_number(levels) and levels > 0 and (H % 2 ** levels or W % 2 ** levels):
        out.append(f'model.levels={levels} squeezes the image {levels} times, so its sides must '
                   f'be multiples of {2 ** levels}; {info.name!r} images are {H}x{W}')
  if family == 'gan':
    group = (_get(config, 'gan.n_critic') or 1) * (_get(config, 'model.pack') or 1)
    batch = _get(config, 'data.batch_size')
    if _is_number(batch) and batch % num_devices == 0 and (batch // num_devices) % group:
      out.append(f'data.batch_size={batch} over {num_devices} device(s) is {batch // num_devices} '
                 f'per device, which must be a multiple of gan.n_critic * model.pack = {group}')
    pack, eval_batch = _get(config, 'model.pack') or 1, _get(config, 'data.eval_batch_size')
    if (_is_number(eval_batch) and eval_batch % num_devices == 0
        and (eval_batch // num_devices) % pack):
      out.append(f'data.eval_batch_size={eval_batch} over {num_devices} device(s) is '
                 f'{eval_batch // num_devices} per device, which must be a multiple of '
                 f'model.pack = {pack}')
  return out


def check_data(config, info, num_devices=1):
  found = data_problems(config, info, num_devices)
  if found:
    raise ConfigError('bad config for this dataset: ' + '; '.join(found))
