"""The five families on one dataset, one budget, the same metrics.

  python launch.py --config=experiments/compare.py:digits --workdir=/tmp/compare
      The quick comparison on 8x8 digits (`python launch.py` with no arguments
      runs it into ./workdirs/default): one seed, each family's training loop
      capped at `budget_seconds` of wall time; writes report.md, report.json,
      samples.png, curves.png and cost.png to the workdir. Measured: 10 min
      42 s on a 2-core CPU in a fresh clone, with the venv, the datasets and
      the digits classifier made from nothing; the README shows its table.
  python launch.py --config=experiments/compare.py:digits_full --workdir=/tmp/compare_full
      A 6x longer budget and 3 seeds (mean +/- std, the spread across seeds).
  python launch.py --config=experiments/compare.py:grid25 --workdir=/tmp/compare_grid25
      2-D mixtures (also :ring8, :moons, :swissroll): diffusion, GAN, VAE and
      flow, each at its own toy2d config under a 120 s budget, 3 seeds;
      mode coverage, high-quality share and KL to uniform (2,500 samples),
      test NLL in nats. The autoregressive family has no points model and says
      so under the table. Run here only at its smoke size so far.
  python launch.py --config=experiments/compare.py:pysrc --workdir=/tmp/compare_pysrc
      Text: the AR LM and masked diffusion of bytes on the stdlib sources, each
      trained for the AR default's wall time (496 s); validation nats/byte (exact
      against a bound), samples/s and network evaluations at several diffusion
      step counts, the share of samples `ast.parse` accepts, each model's
      nats/byte of the other's samples; writes samples.txt beside the report.
  python launch.py --config=experiments/compare.py:mnist --workdir=/tmp/compare_mnist
      (and :cifar10) each family at its research-scale config, 4 hours each:
      needs the dataset prepared (internet) and an accelerator; not run here.

Each family runs its own experiment config (`experiments/<family>.py` at the
variant named in `families`) with the comparison's seed, dataset and budget;
`families.<name>.overrides` ('a.b=1;c=2') changes a field for the comparison
only (diffusion samples unconditionally here, as the other families do). The
validation split is evaluated during training, the test split once at the
end; samples are measured afterwards on the final model (genjax.compare).
"""
import ml_collections

from experiments import common

TOY2D = ('ring8', 'grid25', 'moons', 'swissroll')
VARIANTS = ('digits', 'digits_full') + TOY2D + ('pysrc', 'mnist', 'cifar10')
FAMILIES = ('autoregressive', 'diffusion', 'gan', 'vae', 'flow')
# The autoregressive family models tokens (text bytes, image pixels), not 2-D points.
NOT_ON_POINTS = {'autoregressive': 'it models token sequences (text bytes, image pixels), '
                                   'not real-valued 2-D points'}


def get_config(arg='digits'):
  variant, smoke = common.parse(arg, VARIANTS, 'experiments/compare.py')
  c = ml_collections.ConfigDict()
  c.family = 'compare'
  c.dataset = 'digits'
  c.seeds = 1
  # Where every family reads the dataset (as their configs' data.data_dir, data.download).
  c.data = ml_collections.ConfigDict(dict(data_dir='', download=True))
  c.budget_seconds = 90.0  # wall time of each family's training loop
  c.smoke = smoke  # each family at its ',smoke' config: checks the pipeline only
  c.only = ''  # comma-separated subset of the families, '' = all
  c.missing = ml_collections.ConfigDict()  # family -> why it has no row
  # Samples per family for the quality metrics and the speed; diffusion is also
  # measured under DDIM at these step counts and under DDPM (cost.png).
  # ddpm: DDPM over all T steps too (T network passes a sample: slow on a CPU).
  # text_steps: the masked-diffusion sampler's step counts on text (the pysrc variant).
  c.cost = ml_collections.ConfigDict(dict(num_samples=500, ddim_steps=(10, 50), ddpm=False,
                                          text_steps=(8, 16, 32, 64)))
  c.families = ml_collections.ConfigDict()
  # num_steps: the length of each family's lr schedule, sized to what it reaches in
  # the budget on a 2-core CPU (measured: AR 258, diffusion 758, GAN 601 steps in 90 s;
  # the VAE and the flow ran 1,500 and 800 steps in 47 s and 45 s).
  for name, steps in zip(FAMILIES, (260, 760, 600, 2800, 1500)):
    c.families[name] = ml_collections.ConfigDict(dict(variant='digits', num_steps=steps,
                                                      overrides=''))
  # Every family samples unconditionally: diffusion without its class guidance.
  c.families.diffusion.overrides = 'sample.guidance=0.0'
  if variant == 'digits_full':
    c.seeds = 3
    c.budget_seconds = 600.0
    c.cost.ddpm = True
    for fam in c.families.values():
      fam.num_steps *= 6
  elif variant in TOY2D:
    c.dataset = f'toy2d/{variant}'
    c.seeds = 3
    c.budget_seconds = 120.0
    c.cost.num_samples = 2500  # the mode-coverage protocol's sample count
    del c.families['autoregressive']
    c.missing = ml_collections.ConfigDict(NOT_ON_POINTS)
    for name, fam in c.families.items():  # each family's own toy2d config and schedule
      fam.variant = 'toy2d' if name == 'vae' else variant
      fam.num_steps = 0
    c.families.diffusion.overrides = ''
  elif variant == 'pysrc':  # text: the AR LM against masked diffusion of bytes
    c.dataset = 'pysrc'
    c.budget_seconds = 496.0  # the AR default's training time (README), for both
    c.cost.num_samples = 64
    c.families = ml_collections.ConfigDict()
    # Each at its own pysrc config and schedule; AR samples 60 bytes after 'def ',
    # so that both models' samples are the 64 bytes of one window.
    c.families.autoregressive = ml_collections.ConfigDict(dict(
        variant='pysrc', num_steps=0, overrides='sample.length=60'))
    c.families.masked_diffusion = ml_collections.ConfigDict(dict(
        variant='pysrc', num_steps=0, overrides=''))
    c.missing = ml_collections.ConfigDict(dict(
        diffusion='Gaussian diffusion, the GAN, the VAE and the flow model images and points; '
                  'on bytes the diffusion family is masked_diffusion'))
  elif variant in ('mnist', 'cifar10'):  # research scale: needs internet and an accelerator
    c.dataset = variant
    c.budget_seconds = 4 * 3600.0
    for name, fam in c.families.items():
      fam.variant = 'digits' if name == 'autoregressive' else variant  # AR: digits' model
      fam.num_steps = 0
  if smoke:
    c.cost.num_samples = 16
    c.cost.ddim_steps = (2,)
    c.cost.text_steps = (2, 16)
    c.seeds = 1  # the mean +/- std over seeds is tested on its own (tests/test_compare.py)
  return c
