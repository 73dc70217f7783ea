"""Runs the notebooks and keeps the figures they draw, for the README.

  python colab/export_figures.py                       # every notebook, its own budget
  python colab/export_figures.py diffusion gan --smoke  # some of them, at smoke size

Each notebook runs top to bottom in a kernel of this interpreter (as
tests/test_notebooks.py runs them); every PNG it outputs is written to
docs/notebooks/<notebook>-<n>.png, and a Markdown line per notebook that shows
them is printed. The figures are the notebooks' own: nothing here draws.
"""
import argparse
import base64
import glob
import os
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export(path, out_dir, smoke):
  name = os.path.basename(path)[:-len('.ipynb')]
  env_before = dict(os.environ)
  with tempfile.TemporaryDirectory() as tmp:
    os.environ['GENJAX_NOTEBOOK_WORKDIR'] = tmp
    os.environ['XLA_FLAGS'] = ''  # one device, as a Colab CPU runtime has
    os.environ.pop('PYTHONPATH', None)
    if smoke:
      os.environ['GENJAX_NOTEBOOK_SMOKE'] = '1'
    try:
      nb = nbformat.read(path, as_version=4)
      NotebookClient(nb, timeout=3600, kernel_name='python3',
                     resources={'metadata': {'path': tmp}}).execute()
    finally:
      os.environ.clear()
      os.environ.update(env_before)
  for old in glob.glob(os.path.join(out_dir, f'{name}-*.png')):
    os.remove(old)
  written = []
  for cell in nb.cells:
    for output in cell.get('outputs', []) if cell.cell_type == 'code' else []:
      png = output.get('data', {}).get('image/png')
      if png:
        written.append(os.path.join(out_dir, f'{name}-{len(written) + 1}.png'))
        with open(written[-1], 'wb') as f:
          f.write(base64.b64decode(png))
  return written


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('names', nargs='*', help='notebooks (colab/NAME.ipynb); all by default')
  parser.add_argument('--smoke', action='store_true', help='run each at its smoke size')
  parser.add_argument('--out', default=os.path.join(ROOT, 'docs', 'notebooks'))
  args = parser.parse_args(argv)
  paths = [os.path.join(ROOT, 'colab', f'{n}.ipynb') for n in args.names] or sorted(
      glob.glob(os.path.join(ROOT, 'colab', '*.ipynb')))
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    sys.exit(f'export_figures: no notebook {", ".join(missing)}')
  os.makedirs(args.out, exist_ok=True)
  for path in paths:
    t0 = time.time()
    written = export(path, args.out, args.smoke)
    print(f'{os.path.basename(path)}: {len(written)} figures in {time.time() - t0:.0f} s',
          file=sys.stderr)
    rel = [os.path.relpath(p, ROOT) for p in written]
    print(' '.join(f'<img src="{p}" height="160">' for p in rel))


if __name__ == '__main__':
  main()
