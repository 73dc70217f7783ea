"""Prepares a dataset as array_record: `python -m genjax.data.prepare NAME [--data_dir=D]`.

genjax's own builders (toy2d/*, digits, pysrc) prepare offline and are also
prepared on first use; other TFDS names (mnist, cifar10, tiny_shakespeare)
need internet once.
"""
from absl import app, flags

from genjax.data import pipeline

flags.DEFINE_string('data_dir', None, 'TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).')


def main(argv):
  if len(argv) < 2:
    raise app.UsageError('name the datasets to prepare, e.g. `digits toy2d/ring8 mnist`')
  for name in argv[1:]:
    builder = pipeline.get_builder(name, flags.FLAGS.data_dir, download=True, check_online=False)
    splits = {k: v.num_examples for k, v in builder.info.splits.items()}
    print(f'{name}: prepared in {builder.data_dir}: {splits}')


if __name__ == '__main__':
  app.run(main)
