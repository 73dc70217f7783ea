"""Throughput and model FLOPs utilisation of the AR train step.

  python bench/ar_step.py            # nanoGPT's CPU setting: 4 layers, 4 heads,
                                     # width 128, block 64, batch 12
  python bench/ar_step.py --batch=64 --steps=30
  python bench/ar_step.py --smoke    # one tiny step: checks the script runs (the test suite does)

Prints tokens/s of the full pmapped train step (best of 3 rounds) (forward, backward, pmean,
AdamW), a split of its time into forward / forward+backward / optimizer, and
MFU = analytic model FLOPs/s over a float32 matmul peak measured in the same
process (the best of square matmuls of a few sizes). Model FLOPs follow the
PaLM appendix: 6 N per token for the N non-embedding weights and the tied
output projection, plus 12 L T C per token for attention; XLA's own count of
the compiled step is printed beside it.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import autoregressive as ar_config
from genjax import parallel
from genjax.data.pipeline import DatasetInfo
from genjax.families import autoregressive as ar


ROUNDS = 3


def timeit(fn, steps, warmup=3, rounds=None):
  """Seconds per call: the best of `rounds` timed rounds (the machine is shared)."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  best = float('inf')
  for _ in range(rounds or ROUNDS):
    t = time.perf_counter()
    for _ in range(steps):
      out = fn()
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t) / steps)
  return best


def matmul_peak(sizes):
  best = 0.0
  for n in sizes:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    dt = timeit(lambda: f(a, b), steps=max(3, int(2e9 / (2 * n ** 3))), warmup=1)
    best = max(best, 2 * n ** 3 / dt)
  return best


def model_flops_per_token(L, C, T, V, mlp_ratio=4):
  n_weights = L * (4 * C * C + 2 * mlp_ratio * C * C) + V * C  # attn qkv+out, MLP, tied logits
  return 6 * n_weights + 12 * L * T * C


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--layers', type=int, default=4)
  p.add_argument('--heads', type=int, default=4)
  p.add_argument('--width', type=int, default=128)
  p.add_argument('--block', type=int, default=64)
  p.add_argument('--batch', type=int, default=12)
  p.add_argument('--steps', type=int, default=50)
  p.add_argument('--smoke', action='store_true', help='one tiny step, one round: no timing value')
  args = p.parse_args()
  global ROUNDS
  sizes = (256, 512, 1024, 2048)
  if args.smoke:
    args.layers, args.heads, args.width, args.block, args.batch, args.steps = 1, 2, 32, 16, 4, 1
    ROUNDS, sizes = 1, (64,)

  config = ar_config.get_config('pysrc')
  config.model.num_layers, config.model.num_heads, config.model.width = args.layers, args.heads, args.width
  config.data.seq_len, config.data.batch_size = args.block, args.batch
  config.model.dropout = 0.0
  info = DatasetInfo('bench', 'text', (args.block + 1,), 256, 0, {})
  family = ar.build(config, info)
  tokens = np.random.default_rng(0).integers(0, 256, (args.batch, args.block + 1)).astype(np.int32)
  state = family.init(jax.random.PRNGKey(0), {'tokens': tokens})
  n = jax.local_device_count()

  step = parallel.pmap_train_step(family.train_step)
  batch = parallel.shard({'tokens': tokens})
  holder = [parallel.replicate(state)]

  def full_step():
    holder[0], metrics = step(holder[0], batch, jax.random.PRNGKey(0))
    return metrics

  t = time.perf_counter()
  jax.block_until_ready(full_step())
  compile_s = time.perf_counter() - t
  dt_step = timeit(full_step, args.steps)

  # Split: forward only, forward + backward (no pmap, no optimizer).
  model = ar.make_model(config, info)
  tok = jnp.asarray(tokens)

  def loss(params):
    return ar.token_nll(model, params, tok, 256).mean()

  fwd = jax.jit(loss)
  fwd_bwd = jax.jit(jax.value_and_grad(loss))
  dt_fwd = timeit(lambda: fwd(state.params), args.steps)
  dt_fwd_bwd = timeit(lambda: fwd_bwd(state.params), args.steps)
  xla_flops = fwd_bwd.lower(state.params).compile().cost_analysis()
  xla_flops = xla_flops[0] if isinstance(xla_flops, list) else xla_flops
  xla_flops = xla_flops.get('flops', float('nan'))

  peak = matmul_peak(sizes)
  tokens_per_step = args.batch * args.block
  flops_tok = model_flops_per_token(args.layers, args.width, args.block, 256)
  achieved = flops_tok * tokens_per_step / dt_step
  print(f'device: {jax.devices()[0].device_kind} x{n} ({jax.default_backend()}), jax {jax.__version__}')
  print(f'setting: {args.layers} layers, {args.heads} heads, width {args.width}, block {args.block}, '
        f'batch {args.batch}')
  print(f'compile (first step): {compile_s:.2f} s')
  print(f'train step: {dt_step * 1e3:.2f} ms  ->  {tokens_per_step / dt_step:,.0f} tokens/s')
  print(f'  forward {dt_fwd * 1e3:.2f} ms | forward+backward {dt_fwd_bwd * 1e3:.2f} ms | '
        f'optimizer, pmean and dispatch {max(dt_step - dt_fwd_bwd, 0) * 1e3:.2f} ms')
  print(f'model FLOPs/token: {flops_tok / 1e6:.2f} M (XLA counts {xla_flops / tokens_per_step / 1e6:.2f} M '
        f'for forward+backward)')
  print(f'float32 matmul peak (measured): {peak / 1e9:.1f} GFLOP/s')
  print(f'achieved: {achieved / 1e9:.1f} GFLOP/s  ->  MFU {100 * achieved / peak:.1f}%')


if __name__ == '__main__':
  main()
