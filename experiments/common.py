"""The config blocks every family shares (data, optim, train, evals, sample),
and the variant parsing: `get_config('digits')`, `get_config('digits,smoke')`.

A family's file builds its config with `base(...)`, then sets its own
`model` block and changes what differs.
"""
import ml_collections


def base(family, data_name, *, batch_size, num_steps, eval_split='validation'):
  c = ml_collections.ConfigDict()
  c.family = family
  c.seed = 0
  # GPU only: deterministic reductions and scatter-adds (resume == uninterrupted there too).
  c.deterministic = False

  c.data = ml_collections.ConfigDict()
  c.data.name = data_name
  c.data.data_dir = ''  # '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.data.download = True  # let TFDS download datasets that are not genjax's own
  c.data.train_split = 'train'
  c.data.eval_split = eval_split  # what --mode=eval reads by default
  c.data.seq_len = 64  # text only: tokens of context per window
  c.data.batch_size = batch_size  # global: split over hosts and devices
  c.data.eval_batch_size = 256

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'adamw'
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.optim.schedule = 'cosine'
  c.optim.min_lr_ratio = 0.1
  c.optim.b1 = 0.9
  c.optim.b2 = 0.99
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 1.0

  # The devices (genjax.parallel): every batch splits over all of them. fsdp > 1 splits
  # the parameters and optimizer state over groups of that many devices (a model too
  # large for one device); it must divide the device count. Checkpoints hold the whole
  # state, so a run resumes under another fsdp or device count.
  c.mesh = ml_collections.ConfigDict(dict(fsdp=1))

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = num_steps
  c.train.max_seconds = 0.0  # > 0: stop (and evaluate) once training has run this long
  # 'EVALUATOR/METRIC' (lower is better, e.g. 'validation/bpd'): the final evaluations,
  # samples and ex.state use the step where it was best ('' = the last step).
  c.train.select = ''
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 2
  c.train.progress_bar = True
  # Several hosts: they agree on a SIGTERM (and max_seconds) every this many steps, in an
  # all-gather that waits for all of them; all stop after the same step.
  c.train.stop_check_every = 10
  # > 1: this many train steps per device call (a lax.scan over a stack of batches), for
  # small models whose step is short next to a dispatch; the same results as 1. Steps
  # run one per call where a log, evaluation, checkpoint or stop check falls inside.
  # Not for convnets on a CPU: XLA:CPU runs convolutions in a loop on a slow path
  # (bench/README.md, "Several steps per device call").
  c.train.steps_per_call = 1
  # K > 1: each device's batch runs as K microbatches, one after another, whose
  # gradients are averaged before one update (gradient accumulation): the update of
  # the whole batch in the activation memory of a K-th of it. K must divide it.
  c.train.microbatches = 1
  # True: a step whose update is not finite keeps the previous state; the logged
  # 'skipped_updates' counts them. False: a non-finite loss stops the run.
  c.train.skip_nonfinite_updates = False
  # 'A,B': a jax.profiler trace of steps A to B-1 in <workdir>/profile ('' = none).
  c.train.profile_steps = ''

  # Each evaluator: kind (a genjax.evals module) and every (steps; 0 = at the end only).
  c.evals = ml_collections.ConfigDict()
  c.evals.samples = ml_collections.ConfigDict(dict(kind='samples', every=0, num_samples=64))

  c.sample = ml_collections.ConfigDict()
  c.sample.num_samples = 64  # --mode=sample

  # Metrics always go to <workdir>/metrics.jsonl and TensorBoard (<workdir>/tb).
  c.log = ml_collections.ConfigDict()
  c.log.wandb = ''  # a Weights & Biases project: the metrics go there too (pip install wandb)
  c.log.wandb_mode = ''  # 'offline' (no network; `wandb sync` later), 'online'; '' = $WANDB_MODE
  return c


def likelihood_evals(c, every, max_batches=-1, test_split='test'):
  """Validation every `every` steps (model selection); the test split once, at the end."""
  c.evals.validation = ml_collections.ConfigDict(
      dict(kind='likelihood', split='validation', every=every, max_batches=max_batches))
  if test_split:
    c.evals.test = ml_collections.ConfigDict(dict(kind='likelihood', split=test_split, every=0))


# What `,smoke` changes in every family: a few steps, tiny batches, evals at the end only.
SMOKE = {
    'data.batch_size': 16,
    'data.eval_batch_size': 64,
    'data.seq_len': 16,
    'train.num_steps': 4,
    'train.log_every': 2,
    'train.checkpoint_every': 2,
    'train.progress_bar': False,
    'optim.warmup_steps': 2,
    'sample.num_samples': 4,
}


def smoke(c, family_overrides):
  """`c` shrunk so that a run compiles and trains in seconds."""
  for key, value in {**SMOKE, **family_overrides}.items():
    _set(c, key, value)
  for e in c.evals.values():
    e.every = 0
    if 'max_batches' in e:
      e.max_batches = 2
    if 'num_samples' in e:
      e.num_samples = min(e.num_samples, 16)
  return c


def _set(c, dotted, value):
  *parents, leaf = dotted.split('.')
  for p in parents:
    c = c[p]
  if leaf in c:
    c[leaf] = value


def parse(arg, variants, path):
  """'digits' or 'digits,smoke' -> ('digits', smoke?), with a clear error."""
  name, *flags = arg.split(',')
  if name not in variants or any(f != 'smoke' for f in flags):
    raise ValueError(f'unknown variant {arg!r} of {path}; use one of {tuple(variants)}, '
                     "optionally followed by ',smoke'")
  return name, 'smoke' in flags
