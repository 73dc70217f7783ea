"""Completion across families on digits: the top half of a test digit is
given, each family fills in the bottom half.

  python -m genjax.completion --workdir=/tmp/compare
      Uses the digits models of the comparison in that workdir
      (`<workdir>/<family>/seed_0`, as the digits comparison trains them) and
      trains the ones missing there the same way first; then
      completes the same test digits with each family and writes completion.png
      (a row per family), completion.md and completion.json.

How each family completes (the top 4 of 8 rows, 32 pixels, are known):
- autoregressive: prompted with the known pixels in raster order, it samples the
  rest (its sample.temperature / top_k / top_p); the known pixels are its prompt.
- diffusion: DDPM inpainting over all T steps, unconditional (no label), the
  known pixels re-imposed from q(x_t | x_0) at every step (`samplers.ddpm`).
- vae: pseudo-Gibbs imputation (Rezende et al. 2014, appendix F): encode,
  draw z ~ q(z|x), decode, put the known pixels back; 50 rounds, and the last
  decoder mean fills the bottom.
- flow: gradient ascent on the flow's exact log-density over the unknown
  pixels only (dequantised values, 200 Adam steps from uniform noise), then
  rounded to the grey levels.

The metric beside the figure: how often the comparison's digits classifier
(genjax.evals.classifier) gives the completed image its true label, and the
negative log-likelihood of the true bottom half given the top where the family
can compute it (exact for the AR model; the others' conditionals are not
tractable, so 'n/a').
"""
import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax.experiments import compare as compare_config
from genjax import compare, run, train, writers
from genjax.evals import classifier

FAMILIES = ('autoregressive', 'diffusion', 'vae', 'flow')


def trained(name, c, workdir):
  """(experiment, state): the comparison's model of `name` in workdir/<name>/seed_0,
  trained there if missing."""
  config, _ = compare.budgeted(compare.family_config(name, c.families[name], c, 0), c)
  config.evals = type(config.evals)()  # the comparison evaluated it; here it is only used
  config.train.select = ''
  wd = os.path.join(workdir, name, 'seed_0')
  ex = run.experiment(config, wd)
  if ex.step == 0:
    print(f'completion: training {name} into {wd} (the comparison\'s budget)', flush=True)
    return ex, train.train_and_evaluate(ex).state
  if ex.checkpointer.best() is not None:  # the comparison measured its selected model: so does this
    return ex, ex.checkpointer.restore_best(ex.start_state)
  return ex, ex.start_state


def vae_complete(ex, state, rng, images, mask, rounds=50):
  tools = ex.family.tools
  x = np.where(mask, images, np.asarray(jax.random.uniform(rng, images.shape)) * 16.0)
  for i in range(rounds):
    last = i == rounds - 1
    mean, logvar = tools['encode'](state, x)
    eps = np.asarray(jax.random.normal(jax.random.fold_in(rng, i), mean.shape))
    z = mean + np.exp(0.5 * logvar) * eps
    x_new = tools['decode'](state, z, jax.random.fold_in(rng, 1000 + i), 'mean' if last else None)
    x = np.where(mask, images, x_new)
  return np.clip(np.round(x), 0, 16)


def flow_complete(ex, state, rng, images, mask, steps=200, lr=0.05):
  forward, levels = ex.family.tools['forward'], ex.data.info.num_levels
  known = jnp.asarray(images, jnp.float32) + 0.5  # the middle of each known pixel's bin
  m = jnp.asarray(mask)

  def neg_log_density(free):
    v = jnp.where(m, known, levels * jax.nn.sigmoid(free))  # unknown values stay in (0, L)
    z, log_det = forward(state, v / levels)
    z = z.reshape(z.shape[0], -1)
    return -jnp.sum(-0.5 * z ** 2, axis=-1).sum() - jnp.sum(log_det)

  tx = optax.adam(lr)
  free = jax.random.normal(rng, images.shape)
  opt = tx.init(free)

  @jax.jit
  def step(free, opt):
    grads = jax.grad(neg_log_density)(free)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(free, updates), opt

  for _ in range(steps):
    free, opt = step(free, opt)
  v = np.asarray(levels * jax.nn.sigmoid(free))
  return np.where(mask, images, np.clip(np.floor(v), 0, levels - 1))


def complete(name, ex, state, rng, images, mask, known):
  tools = ex.family.tools
  if name == 'autoregressive':
    return tools['complete'](state, rng, images, known)
  if name == 'diffusion':
    # Scale 0: the unconditional model (the null label), whatever label is passed.
    filled = tools['figures'].inpaint(state.ema_params, rng, images, mask,
                                      label=np.zeros(len(images), np.int32), scale=0.0)
    return np.clip(np.round(filled), 0, ex.data.info.num_levels - 1)
  if name == 'vae':
    return vae_complete(ex, state, rng, images, mask)
  return flow_complete(ex, state, rng, images, mask)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdir', required=True)
  p.add_argument('--num', type=int, default=200, help='test digits completed per family')
  p.add_argument('--show', type=int, default=12, help='of them, in the figure')
  p.add_argument('--smoke', action='store_true', help='the comparison\'s smoke models, 16 digits')
  args = p.parse_args(argv)
  c = compare_config.get_config('digits' + (',smoke' if args.smoke else ''))
  if args.smoke:
    args.num, args.show = 16, 8
  rng = jax.random.PRNGKey(0)
  exs = {name: trained(name, c, args.workdir) for name in FAMILIES}
  data = next(iter(exs.values()))[0].data
  batch = next(data.eval_batches('test'))
  images = np.asarray(batch['image'][:args.num], np.float32)
  labels = np.asarray(batch['label'][:args.num])
  H = images.shape[1]
  mask = np.zeros(images.shape, bool)
  mask[:, :H // 2] = True
  known = int(np.prod(images.shape[1:])) // 2  # raster order: the top half is the first half
  clf = classifier.load(c.dataset, c.data.data_dir, **c.quality.classifier.to_dict())

  def accuracy(x):
    return float(np.mean(clf.predict(x).argmax(-1) == labels))

  rows = [{'method': 'the test digits', 'accuracy': accuracy(images)},
          {'method': 'top half only (bottom blank)', 'accuracy': accuracy(np.where(mask, images, 0))}]
  completed = {}
  for name, (ex, state) in exs.items():
    x = complete(name, ex, state, jax.random.fold_in(rng, len(completed)), images, mask, known)
    assert np.array_equal(x[mask], images[mask]), f'{name} changed the given pixels'
    completed[name] = x
    row = {'method': name, 'accuracy': accuracy(x),
           'bottom_mse': float(np.mean((x - images)[~mask] ** 2))}
    if 'conditional_nll' in ex.family.tools:
      nll = ex.family.tools['conditional_nll'](state, images, known)
      row['bottom_nll'] = float(np.mean(nll))
      row['bottom_bpd'] = float(np.mean(nll) / (images[0].size - known) / np.log(2))
    rows.append(row)
    print(f'completion: {name}: accuracy {row["accuracy"]:.3f}', flush=True)

  os.makedirs(args.workdir, exist_ok=True)
  _figure(os.path.join(args.workdir, 'completion.png'), images[:args.show], mask[:args.show],
          {k: v[:args.show] for k, v in completed.items()}, data.info)
  command = ' '.join(['python', '-m', __spec__.name if __spec__ else 'genjax.completion',
                      f'--workdir={args.workdir}'] + (['--smoke'] if args.smoke else []))
  table = _markdown(rows, args.num, command)
  with open(os.path.join(args.workdir, 'completion.md'), 'w') as f:
    f.write(table)
  with open(os.path.join(args.workdir, 'completion.json'), 'w') as f:
    json.dump({'rows': rows, 'num': args.num}, f, indent=2)
  print(table)
  print(f'completion in {args.workdir}: completion.png, completion.md, completion.json')
  return rows


def _markdown(rows, num, command):
  fmt = lambda r, k, f: f.format(r[k]) if k in r else 'n/a'
  lines = [f'```bash\n{command}\n```', '',
           '| completion by | classifier gives the true label | bottom-half NLL (nats) | '
           'bottom-half bits/dim | bottom-half MSE (levels²) |', '|---|---:|---:|---:|---:|']
  lines += [f"| {r['method']} | {r['accuracy']:.3f} | {fmt(r, 'bottom_nll', '{:.2f}')} | "
            f"{fmt(r, 'bottom_bpd', '{:.3f}')} | {fmt(r, 'bottom_mse', '{:.2f}')} |" for r in rows]
  lines += ['', f'{num} test digits; the top half (32 pixels) is given. The NLL is of the true '
            'bottom half given the top: exact for the AR model, not tractable for the others '
            '(n/a). MSE: mean squared error of the filled pixels against the truth, in grey '
            'levels (0..16) squared.']
  return '\n'.join(lines) + '\n'


def _figure(path, images, mask, completed, info):
  rows = {'test digit': images, 'given (top half)': np.where(mask, images, 0)}
  rows.update(completed)
  writers.labelled_rows(path, rows, info.value_range)


if __name__ == '__main__':
  main()
