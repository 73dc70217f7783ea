"""Tokens/second of KV-cache decoding against recomputing the whole window,
at 128, 512 and 2048 generated tokens, batch 1 and 16.

  python bench/decode.py            # the AR default network (4 layers, width 128)
  python bench/decode.py --smoke    # tiny: checks the script runs (the suite does)

Both decoders are `genjax.families.autoregressive.decode` and `decode_recompute`,
each one compiled `lax.scan`, with the context set to the number of generated
tokens (a one-byte prompt). Recomputation runs the full fixed-size window at
every step, so its time per token does not depend on the position: it is
timed on the first `--recompute_tokens` tokens, and that rate is the rate of
the whole run (the KV decoder is timed on the whole run). The two draw the
same tokens for the same keys (tests/test_autoregressive.py checks it).
"""
import argparse

import jax
import numpy as np

import benchlib
from genjax.experiments import autoregressive as ar_config
from genjax.data.pipeline import DatasetInfo
from genjax.families import autoregressive as ar


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--lengths', default='128,512,2048')
  p.add_argument('--batches', default='1,16')
  p.add_argument('--recompute_tokens', type=int, default=16,
                 help='tokens timed for the recomputing decoder (its per-token cost is constant)')
  p.add_argument('--smoke', action='store_true')
  args = p.parse_args()
  lengths = [int(n) for n in args.lengths.split(',')]
  batches = [int(b) for b in args.batches.split(',')]
  config = ar_config.get_config('pysrc')
  config.model.dropout = 0.0
  rounds = 2
  if args.smoke:
    lengths, batches, args.recompute_tokens, rounds = [8], [2], 4, 1
    config.model.num_layers, config.model.width, config.model.num_heads = 1, 32, 2

  rows = []
  for length in lengths:
    info = DatasetInfo('bench', 'text', (length + 1,), 256, 0, {})
    model = ar.make_model(config, info)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))['params']
    n_re = min(args.recompute_tokens, length)
    kv = jax.jit(lambda p, x, r, n=length - 1: ar.decode(model, p, x, n, r))
    re = jax.jit(lambda p, x, r, n=n_re: ar.decode_recompute(model, p, x, n, r))
    for B in batches:
      prompt = np.full((B, 1), ord('d'), np.int32)
      rng = jax.random.PRNGKey(1)
      kv_compile, _ = benchlib.first_call(lambda: kv(params, prompt, rng))
      re_compile, _ = benchlib.first_call(lambda: re(params, prompt, rng))
      dt_kv = benchlib.timeit(lambda: kv(params, prompt, rng), 1, warmup=0, rounds=rounds)
      dt_re = benchlib.timeit(lambda: re(params, prompt, rng), 1, warmup=0, rounds=rounds)
      kv_tps, re_tps = B * (length - 1) / dt_kv, B * n_re / dt_re
      rows.append([length, B, f'{kv_tps:,.0f}', f'{re_tps:,.0f}', f'{kv_tps / re_tps:.1f}x',
                   f'{kv_compile:.1f} / {re_compile:.1f}'])
      print(f'{length} tokens, batch {B}: KV cache {kv_tps:,.0f} tokens/s, recompute '
            f'{re_tps:,.0f} tokens/s ({n_re} timed), {kv_tps / re_tps:.1f}x', flush=True)
  print(f'machine: {benchlib.machine()}')
  print(f'network: {config.model.num_layers} layers, {config.model.num_heads} heads, '
        f'width {config.model.width}, {config.model.positions} positions, float32')
  benchlib.table(['tokens', 'batch', 'KV cache tokens/s', 'recompute tokens/s', 'speed-up',
                  'first call s (KV / recompute)'], rows)


if __name__ == '__main__':
  main()
