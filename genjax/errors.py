"""Errors a researcher can act on. launch.py prints any `GenjaxError` as one
sentence (`genjax: ...`) with no traceback; each message names the thing at
fault and what to do about it."""


class GenjaxError(Exception):
  """Base of the known errors."""


class ConfigError(GenjaxError, ValueError):
  """A config value that cannot work (named field, allowed values)."""


class DivergedError(GenjaxError, FloatingPointError):
  """A train metric that must stay finite did not; nothing after it was saved."""


class MissingCheckpointError(GenjaxError, FileNotFoundError):
  """A mode that needs a trained model found no checkpoint."""


class WorkdirError(GenjaxError, OSError):
  """The workdir cannot be written (a full disk, a read-only or foreign directory);
  the checkpoints written before are intact."""
