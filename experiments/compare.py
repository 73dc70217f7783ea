"""The families on one dataset, at one training compute, measured the same way.

  python launch.py --config=experiments/compare.py:digits --workdir=/tmp/compare
      The quick comparison on 8x8 digits (`python launch.py` with no arguments
      runs it into ./workdirs/default): every family trains for the same number
      of FLOPs; writes report.md, report.json, samples.png, curves.png and
      cost.png. The README shows its table.
  python launch.py --config=experiments/compare.py:digits_full --workdir=/tmp/compare_full
      Six times the compute and 3 seeds (mean ± std across seeds).
  python launch.py --config=experiments/compare.py:grid25 --workdir=/tmp/compare_grid25
      2-D mixtures (also :ring8, :moons, :swissroll), 3 seeds: mode coverage,
      high-quality share, KL to uniform, test NLL in nats.
  python launch.py --config=experiments/compare.py:pysrc --workdir=/tmp/compare_pysrc
      Text: the AR LM, masked diffusion and block diffusion of bytes on the
      stdlib sources at one compute; writes samples.txt beside the report.
  python launch.py --config=experiments/compare.py:mnist --workdir=/tmp/compare_mnist
      (and :cifar10) each family at its research-scale config; needs the
      dataset (internet) and an accelerator.

Budget: `budget_flops` training FLOPs per family. A family's train step is
counted once on its jaxpr (genjax.flops), so its step count, and the length
of its lr schedule, follow from the budget on any machine, under any load.
`budget_seconds` > 0 stops each family after that much wall time instead
(the schedule still ends at the FLOP budget's step count): what N minutes buy
on this machine, a number that changes with its load.

Each entry of `families` runs `experiments/<family>.py` at `variant` (its
`family` field names the family where the entry's name is a label, as for
block diffusion) with the comparison's seed, dataset and budget;
`overrides` ('a.b=1;c=2') changes fields for the comparison only.
"""
import importlib

import ml_collections

from genjax import families
from genjax.experiments import common

TOY2D = ('ring8', 'grid25', 'moons', 'swissroll')
VARIANTS = ('digits', 'digits_full') + TOY2D + ('pysrc', 'mnist', 'cifar10')
MODALITY = {'digits': 'image', 'digits_full': 'image', 'pysrc': 'text', 'mnist': 'image',
            'cifar10': 'image', **{v: 'points' for v in TOY2D}}
# What the comparison changes in a family's own config, by the data's modality:
# every family samples unconditionally (diffusion and flow matching without their
# class guidance) and draws from its model (the VAE from its decoder, not the
# decoder's mean); the AR model writes 60 bytes after 'def ', so every model's
# samples fill one window.
OVERRIDES = {('image', 'diffusion'): 'sample.guidance=0.0',
             ('image', 'flow_matching'): 'sample.guidance=0.0',
             ('image', 'vae'): 'sample.decode=draw',
             ('text', 'autoregressive'): 'sample.length=60'}


def _entry(variant, overrides='', family=''):
  return ml_collections.ConfigDict(dict(variant=variant, overrides=overrides, family=family))


def _entries(c, variant):
  """An entry for every registered family that models the variant's data, at
  the variant of its own config of that name (for a 2-D mixture, its 'toy2d'
  where it has no config of the mixture's name); the others go to c.missing
  with the reason."""
  modality = MODALITY[variant]
  own_variant = 'digits' if variant == 'digits_full' else variant
  for name in families.REGISTRY:
    modalities = families.module(name).MODALITIES
    if modality not in modalities:
      c.missing[name] = f'it models {" and ".join(modalities)} data, not {modality}'
      continue
    own = getattr(importlib.import_module(f'genjax.experiments.{name}'), 'VARIANTS', ())
    pick = next((v for v in (own_variant, 'toy2d' if modality == 'points' else None)
                 if v in own), None)
    if pick is None:
      c.missing[name] = f'experiments/{name}.py has no {own_variant} variant'
      continue
    c.families[name] = _entry(pick, OVERRIDES.get((modality, name), ''))


def get_config(arg='digits'):
  variant, smoke = common.parse(arg, VARIANTS, 'experiments/compare.py')
  c = ml_collections.ConfigDict()
  c.family = 'compare'
  c.dataset = 'digits'
  c.seeds = 1
  # Where every family reads the dataset (as their configs' data.data_dir, data.download).
  c.data = ml_collections.ConfigDict(dict(data_dir='', download=True))
  c.budget_flops = 2e12  # training FLOPs per family; 0 = each family's own num_steps
  # True: no family runs past its own config's num_steps (its schedule's end), so a
  # family whose step is cheap uses less than the budget (the report says how much).
  c.cap_steps = False
  c.budget_seconds = 0.0  # > 0: stop each family after this much wall time
  # Evaluations of the validation split over the schedule (model selection).
  c.validations = 6
  # Batches of this many examples for the likelihood evaluations (0 = the family's
  # own): enough batches for the interval of the test bits/dim.
  c.eval_batch_size = 32
  c.smoke = smoke  # each family at its ',smoke' config: checks the pipeline only
  c.only = ''  # comma-separated subset of the entries, '' = all
  c.missing = ml_collections.ConfigDict()  # family -> why it has no row
  # Sample metrics: as many samples as reference examples and held-out examples
  # (at most num_samples); intervals from `bootstrap` resamples; `classifier`
  # changes the feature classifier's settings (genjax.evals.classifier.DEFAULTS).
  c.quality = ml_collections.ConfigDict(dict(num_samples=1000, bootstrap=200,
                                             classifier=ml_collections.ConfigDict()))
  # The other samplers of a model (cost.png): diffusion at these DDIM step counts,
  # text models at text_steps; full_chain adds a family's full chain (DDPM's T steps).
  # Sampling speed is timed on batches of timing_batch samples.
  c.cost = ml_collections.ConfigDict(dict(ddim_steps=(1, 2, 5, 10, 25), full_chain=False,
                                          text_steps=(8, 16, 32, 64), timing_batch=100))
  c.families = ml_collections.ConfigDict()
  if variant == 'digits_full':
    c.seeds = 3
    c.budget_flops *= 6
    c.cost.full_chain = True
  elif variant in TOY2D:
    c.dataset = f'toy2d/{variant}'
    c.seeds = 3
    c.budget_flops = 0.0  # each family at its own toy2d schedule
    c.eval_batch_size = 0
    c.quality.num_samples = 2500  # the mode-coverage protocol's sample count
    c.cost.ddim_steps = (10, 50)
  elif variant == 'pysrc':  # text: the AR LM against masked and block diffusion of bytes
    c.dataset = 'pysrc'
    c.budget_flops = 3.35e13  # the AR default's 8,000 steps
    c.eval_batch_size = 0
    c.quality.num_samples = 64
  elif variant in ('mnist', 'cifar10'):  # research scale: needs internet and an accelerator
    c.dataset = variant
    c.budget_flops = 1e17
    c.cap_steps = True  # step costs differ 500-fold at these sizes
    c.eval_batch_size = 0
    c.quality.num_samples = 10_000
  _entries(c, variant)
  if variant == 'pysrc':  # block diffusion: a second config of masked diffusion
    c.families.block_diffusion = _entry('pysrc_blocks', family='masked_diffusion')
  if smoke:
    c.budget_flops = 0.0  # each family's ',smoke' steps (the FLOPs are still counted)
    c.quality.num_samples = 8
    c.quality.bootstrap = 20
    c.quality.classifier.steps = 20  # a classifier that only checks the pipeline
    c.cost.ddim_steps = (2,)
    c.cost.full_chain = variant in ('digits', 'digits_full')  # one run for both (tests)
    c.cost.text_steps = (2, 16)
    c.seeds = 1  # the mean ± std over seeds is tested on its own (tests/test_compare.py)
    c.validations = 2  # a selection between two steps checks the pipeline as six do
  return c
