"""The five families on one dataset, one budget, the same metrics.

  python launch.py --config=experiments/compare.py:digits --workdir=/tmp/compare
      The quick comparison on 8x8 digits, one seed, each family trained for at
      most `budget_seconds` of wall time; writes report.md, report.json,
      samples.png, curves.png and cost.png to the workdir. (The per-family
      step counts are first guesses; the budget is not yet tuned to the
      15-minute target.)
  python launch.py --config=experiments/compare.py:digits_full --workdir=/tmp/compare_full
      Longer budget, 3 seeds (mean +/- std).

Each family runs its own experiment config (`experiments/<family>.py` at the
variant named below) with the comparison's seed, dataset and budget; the
validation split is evaluated during training, the test split once at the
end; samples are measured afterwards on the final model (genjax.compare).
"""
import ml_collections

from experiments import common

VARIANTS = ('digits', 'digits_full')
FAMILIES = ('autoregressive', 'diffusion', 'gan', 'vae', 'flow')


def get_config(arg='digits'):
  variant, smoke = common.parse(arg, VARIANTS, 'experiments/compare.py')
  c = ml_collections.ConfigDict()
  c.family = 'compare'
  c.dataset = 'digits'
  c.seeds = 1
  c.budget_seconds = 100.0  # wall time of each family's training loop
  c.smoke = smoke  # each family at its ',smoke' config: checks the pipeline only
  c.only = ''  # comma-separated subset of the families, '' = all
  # Samples per family for the quality metrics and the speed; diffusion is also
  # measured under DDIM at these step counts and under DDPM (cost.png).
  c.cost = ml_collections.ConfigDict(dict(num_samples=500, ddim_steps=(10, 50)))
  c.families = ml_collections.ConfigDict()
  # num_steps: the length of each family's lr schedule, sized to the budget.
  for name, steps in zip(FAMILIES, (300, 1000, 1500, 1500, 800)):
    c.families[name] = ml_collections.ConfigDict(dict(variant='digits', num_steps=steps,
                                                      overrides=''))
  # Every family samples unconditionally: diffusion without its class guidance.
  c.families.diffusion.overrides = 'sample.guidance=0.0'
  if variant == 'digits_full':
    c.seeds = 3
    c.budget_seconds = 600.0
    for fam in c.families.values():
      fam.num_steps *= 6
  if smoke:
    c.cost.num_samples = 16
    c.cost.ddim_steps = (2,)
    c.seeds = min(c.seeds, 2)  # two still exercise the mean +/- std over seeds
  return c
