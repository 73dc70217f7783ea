"""Experiment configs by name or by path, for the genjax command and notebooks.

  load('vae:digits,smoke')                        a shipped config, by family name
  load('experiments/vae.py:digits')               a config file (relative to the cwd)
  load('/path/to/my_config.py')                   its get_config() default

The configs are the package genjax.experiments (in a checkout, a link to the
repository's experiments/), so a pip-installed genjax puts no top-level
`experiments` package in site-packages. Every bad spec is a `ConfigError` of
one sentence.
"""
import difflib
import importlib.util
import os

from genjax.errors import ConfigError

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def config_dir():
  """The directory of the shipped configs (genjax/experiments)."""
  d = os.path.join(_PACKAGE, 'experiments')
  if os.path.isfile(os.path.join(d, 'common.py')):
    return d
  raise ConfigError(f'genjax has no experiment configs beside {_PACKAGE}; reinstall it '
                    '(pip install genjax-families) or give --config a path to a config file')


def names():
  """The shipped configs' names: 'autoregressive', 'compare', 'vae', ..."""
  return sorted(f[:-3] for f in os.listdir(config_dir())
                if f.endswith('.py') and not f.startswith('_') and f != 'common.py')


def resolve(spec):
  """'NAME[:ARG]' or 'PATH[:ARG]' -> (path of the config file, ARG or None).

  A path that exists wins over a name; a name is one of `names()`.
  """
  path, sep, arg = spec.partition(':')
  arg = arg if sep else None
  if os.path.isfile(path):
    return path, arg
  if path in _safe_names():
    return os.path.join(config_dir(), path + '.py'), arg
  if os.path.isdir(path):
    raise ConfigError(f'--config={spec}: {path} is a directory; give a config file in it '
                      f'(e.g. {os.path.join(path, "vae.py")}) or a config name ({_listing()})')
  close = difflib.get_close_matches(os.path.basename(path).removesuffix('.py'), _safe_names(), 1)
  hint = f'; did you mean --config={close[0]}{sep}{arg or ""}?' if close else ''
  if path.endswith('.py') or os.sep in path:
    raise ConfigError(f'--config={spec}: no config file {path} (from {os.getcwd()}); give a path '
                      f'to one, or a config name ({_listing()}){hint}')
  raise ConfigError(f'--config={spec}: no config named {path!r} ({_listing()}) and no such '
                    f'file{hint}')


def load(spec):
  """The ConfigDict that `spec` names (see `resolve`), its variant checked."""
  path, arg = resolve(spec)
  module = load_module(path)
  name = spec.partition(':')[0]
  label = os.path.relpath(path) if os.path.isfile(name) else name
  if arg is not None:
    check_variant(module, arg, label)
  try:
    return module.get_config() if arg is None else module.get_config(arg)
  except ValueError as e:  # a config's own check of its argument
    raise ConfigError(f'--config={spec}: {_one_line(e)}') from None


def check_variant(module, arg, label):
  """For configs that list their VARIANTS: a did-you-mean for 'digitz' and ',smok'."""
  variants = getattr(module, 'VARIANTS', None)
  if not variants:
    return
  name, *suffixes = arg.split(',')
  listing = ', '.join(variants)
  if name not in variants:
    close = difflib.get_close_matches(name, variants, 1)
    hint = f'did you mean {close[0]!r}? ' if close else ''
    raise ConfigError(f'unknown variant {name!r} of {label}; {hint}its variants: {listing} '
                      "(each may take ',smoke' for a run of a few steps)")
  bad = [s for s in suffixes if s != 'smoke']
  if bad:
    raise ConfigError(f"{label}:{arg}: unknown suffix ',{bad[0]}' after the variant; the one "
                      f"suffix is ',smoke' (e.g. {label}:{name},smoke)")


def load_module(path):
  """The config file at `path` as a module (not registered in sys.modules)."""
  spec = importlib.util.spec_from_file_location('genjax_config', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except (SyntaxError, ImportError) as e:
    raise ConfigError(f'cannot load the config file {path}: {type(e).__name__}: '
                      f'{_one_line(e)}') from None
  if not callable(getattr(module, 'get_config', None)):
    raise ConfigError(f'{path} defines no get_config(); a config file returns its ConfigDict '
                      'from get_config(arg)')
  return module


def _safe_names():
  try:
    return names()
  except ConfigError:
    return []


def _listing():
  return 'one of ' + ', '.join(_safe_names())


def _one_line(e):
  return ' '.join(str(e).split())
