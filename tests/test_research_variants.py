"""Every family's research-scale image variants (mnist, cifar10), and the
comparisons of them, run end to end at smoke size on mocked TFDS data of the
real shapes: these datasets cannot be downloaded here, and a config that never
ran is a config that does not run.

The cases come from the registry and each config's VARIANTS, so a new family
or a new image variant is tested without editing this file.
"""
import dataclasses
import importlib
import json
import math
import os
import shutil

import numpy as np
import pytest

from genjax import compare, families, run
from genjax.experiments import compare as compare_config
from tests.mock_tfds import mock_tfds

RESEARCH = ('mnist', 'cifar10')
SHAPES = {'mnist': (28, 28, 1), 'cifar10': (32, 32, 3)}


def _experiment(family):
  try:
    return importlib.import_module(f'genjax.experiments.{family}')
  except ModuleNotFoundError:
    return None


CASES = [(family, variant) for family in sorted(families.REGISTRY) for variant in RESEARCH
         if variant in getattr(_experiment(family), 'VARIANTS', ())]


def test_the_research_variants_are_found():
  assert {v for _, v in CASES} == set(RESEARCH), CASES


@dataclasses.dataclass
class Trained:
  """A variant's smoke run through run.main: what the checks below read."""
  config: object
  workdir: str
  final: dict
  family: object  # as built (its `sample` is not the wrapper that records)
  drawn: list  # every sample dict the run drew


_TRAINED = {}  # (family, variant) -> Trained, in this worker


def trained(family, variant, tmp_path_factory):
  """The family's `<variant>,smoke` run, trained once per worker: its test and
  the variant's comparison (the same xdist group, so the same worker) read it."""
  if (family, variant) not in _TRAINED:
    root = tmp_path_factory.mktemp(f'{family}_{variant}')
    config = _experiment(family).get_config(variant + ',smoke')
    data_dir = str(root / 'tfds')
    config.data.data_dir = data_dir  # the classifier evaluators cache theirs there too
    built, drawn = [], []

    def build_family(c, info):
      fam = families.build(c, info)
      built.append(fam)

      def sample(*args, **kwargs):
        drawn.append(fam.sample(*args, **kwargs))
        return drawn[-1]

      return dataclasses.replace(fam, sample=sample)

    workdir = str(root / 'run')
    with mock_tfds(data_dir, names=(variant,)):
      final = run.main(config, workdir, build_family=build_family)
    _TRAINED[family, variant] = Trained(config, workdir, final, built[0], drawn)
  return _TRAINED[family, variant]


@pytest.mark.parametrize('family, variant',
                         [pytest.param(f, v, marks=pytest.mark.xdist_group(v)) for f, v in CASES])
def test_research_variant_trains_evaluates_and_samples(family, variant, tmp_path_factory):
  t = trained(family, variant, tmp_path_factory)
  config, workdir, final, fam, drawn = t.config, t.workdir, t.final, t.family, t.drawn

  assert set(final) == set(config.evals), 'every configured evaluator ran at the end'
  for name, cfg in config.evals.items():
    if cfg.kind == 'likelihood' and fam.likelihood != 'none':
      assert math.isfinite(final[name]['bpd']) and final[name]['bpd'] > 0, (name, final[name])
      assert final[name]['likelihood'] == fam.likelihood

  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    train = [r for r in map(json.loads, f) if r['split'] == 'train']
  assert train and train[-1]['step'] == config.train.num_steps
  for row in train:
    for key in fam.finite:
      assert math.isfinite(row[key]), (key, row)

  assert drawn, 'no samples were drawn'
  for samples in drawn:
    images = np.asarray(samples['image'])
    assert images.shape[1:] == SHAPES[variant]
    assert np.all(np.isfinite(images)) and images.min() >= 0 and images.max() <= 255
  assert os.listdir(os.path.join(workdir, 'samples'))


@pytest.mark.parametrize('variant', [pytest.param(v, marks=pytest.mark.xdist_group(v))
                                     for v in RESEARCH])
def test_research_comparison_measures_every_image_family(variant, tmp_path, tmp_path_factory):
  """experiments/compare.py:<variant> at smoke size: every family with that variant
  measured, the data row and the report written. Each family's run is the one
  its own test above trained (the comparison's config differs from it only in
  sampling settings and evaluators): the comparison finds it finished in its
  workdir, evaluates it and draws from it, as it does on a rerun."""
  config = compare_config.get_config(variant + ',smoke')
  data_dir = str(tmp_path / 'tfds')
  config.data.data_dir = data_dir
  workdir = str(tmp_path / 'compare')
  for label in config.families:
    shutil.copytree(trained(label, variant, tmp_path_factory).workdir,
                    os.path.join(workdir, label, 'seed_0'))
  with mock_tfds(data_dir, names=(variant,)):
    compare.main(config, workdir)
  with open(os.path.join(workdir, 'report.json')) as f:
    report = json.load(f)
  rows = {r['family']: r for r in report['runs']}
  assert set(rows) == {f for f, v in CASES if v == variant}, sorted(rows)
  for name, row in rows.items():
    assert 0 < row['selected_step'] <= row['steps'], (name, row)
    assert row['train_flops'] > 0 and math.isfinite(row['fd']) and row['fd'] >= 0, (name, row)
    assert 0 <= row['precision'] <= 1 and 0 <= row['recall'] <= 1, (name, row)
    if row['likelihood'] != 'none':
      assert math.isfinite(row['bpd']) and row['bpd'] > 0, (name, row)
  assert math.isfinite(report['data']['fd']), report['data']
  assert {'report.md', 'samples.png'} <= set(os.listdir(workdir))
