"""Throughput and model FLOPs utilisation of the AR train step, against a
PyTorch GPT of the same architecture timed in the same script.

  python bench/ar_step.py --torch             # nanoGPT's CPU setting: 4 layers, 4 heads,
                                              # width 128, block 64, batch 12
  python bench/ar_step.py --torch --steps_per_call=10   # also 10 steps per device call
                                                        # (train.steps_per_call)
  python bench/ar_step.py --size=baby --torch --steps_per_call=2
                                              # 6 layers, 6 heads, width 384, block 256, batch 64
  python bench/ar_step.py --size=gpt2 --dtype=bfloat16 --torch --compile --steps_per_call=10
                                              # GPT-2 small, for a GPU
  python bench/ar_step.py --torch --system_malloc   # genjax under the C library's default allocator
  python bench/ar_step.py --smoke             # one tiny step: checks the script runs (the suite does)

`--torch` needs the benchmark-only extras (`pip install -r requirements-bench.txt`);
without them the PyTorch column says so and the rest still runs.

Prints tokens/s of the full train step (forward, backward, pmean,
gradient clipping, AdamW), a split of its time into forward / forward+backward
/ the rest, and MFU = analytic model FLOPs/s over a matmul peak measured in the
same process, in the compute dtype (the best of square matmuls large enough to
reach it), with the datasheet peak beside it where the device is known. Model
FLOPs follow the PaLM appendix: 6 N per token for the N non-embedding weights
and the tied output projection, plus 12 L T C per token for attention.

genjax's process keeps freed host memory as launch.py's does (genjax.hostmem)
unless --system_malloc. PyTorch runs in its own process, at its own defaults,
once per round, so the two still alternate round by round.

The PyTorch GPT is the same network: pre-LayerNorm blocks, fused qkv, rotary
positions (the same half-split convention), tanh GELU, tied embeddings,
AdamW (weight decay 0.1) after clipping the global norm to 1, causal
`scaled_dot_product_attention`; bfloat16 through autocast. The best round of
each is kept.
"""
import argparse
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import benchlib
from genjax.experiments import autoregressive as ar_config
from genjax import hostmem, parallel
from genjax.data.pipeline import DatasetInfo
from genjax.families import autoregressive as ar

SIZES = {  # layers, heads, width, block, batch, timed steps per round
    'nanogpt': (4, 4, 128, 64, 12, 20),
    'baby': (6, 6, 384, 256, 64, 1),
    'gpt2': (12, 12, 768, 1024, 16, 10),
}
# Dense matmul peaks from the vendors' datasheets (TFLOP/s), by compute dtype.
DATASHEET = {
    'H100': {'bfloat16': 989.0, 'float32': 67.0},  # SXM; float32 without TF32
    'H200': {'bfloat16': 989.0, 'float32': 67.0},
    'A100': {'bfloat16': 312.0, 'float32': 19.5},
}


def matmul_peak(sizes, dtype):
  best = 0.0
  for n in sizes:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    dt = benchlib.timeit(lambda: f(a, b), steps=max(3, int(2e9 / (2 * n ** 3))))
    best = max(best, 2 * n ** 3 / dt)
  return best


def model_flops_per_token(L, C, T, V, mlp_ratio=4):
  n_weights = L * (4 * C * C + 2 * mlp_ratio * C * C) + V * C  # attn qkv+out, MLP, tied logits
  return 6 * n_weights + 12 * L * T * C


def torch_step(args, tokens):
  """A PyTorch train step of the same network, or (None, why not)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None, 'not installed (pip install -r requirements-bench.txt)'
  from torch import nn  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  L, H, C, T = args.layers, args.heads, args.width, args.block
  D = C // H
  freqs = 10000.0 ** (-torch.arange(D // 2, dtype=torch.float32) / (D // 2))
  angles = torch.arange(T, dtype=torch.float32)[:, None] * freqs  # TxD/2
  cos, sin = angles.cos().to(device), angles.sin().to(device)

  def rotary(x):  # BxHxTxD, the two halves rotated as in genjax.nn.transformer.rotary
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).to(x.dtype)

  class Block(nn.Module):

    def __init__(self):
      super().__init__()
      self.ln_attn, self.ln_mlp = nn.LayerNorm(C), nn.LayerNorm(C)
      self.qkv, self.out = nn.Linear(C, 3 * C), nn.Linear(C, C)
      self.fc, self.proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
      B = x.shape[0]
      q, k, v = self.qkv(self.ln_attn(x)).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
      h = F.scaled_dot_product_attention(rotary(q), rotary(k), v, is_causal=True)
      x = x + self.out(h.transpose(1, 2).reshape(B, T, C))
      return x + self.proj(F.gelu(self.fc(self.ln_mlp(x)), approximate='tanh'))

  class GPT(nn.Module):

    def __init__(self):
      super().__init__()
      self.embed = nn.Embedding(256, C)
      self.blocks = nn.ModuleList(Block() for _ in range(L))
      self.ln_final = nn.LayerNorm(C)

    def forward(self, idx):
      x = self.embed(idx)
      for block in self.blocks:
        x = block(x)
      return self.ln_final(x) @ self.embed.weight.T

  torch.manual_seed(0)
  model = GPT().to(device)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1,
                          fused=device == 'cuda')
  if args.compile:
    model = torch.compile(model)
  x = torch.as_tensor(tokens[:, :-1], dtype=torch.long, device=device)
  y = torch.as_tensor(tokens[:, 1:], dtype=torch.long, device=device)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == 'bfloat16')

  def step():
    with autocast:
      loss = F.cross_entropy(model(x).float().view(-1, 256), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if device == 'cuda':
      torch.cuda.synchronize()
    return loss

  label = f'torch {torch.__version__} ({device}{", compiled" if args.compile else ", eager"})'
  return step, label


def torch_round(args):
  """One round of the PyTorch step in its own process: {'label', 's' (seconds a step)}."""
  argv = [sys.executable, __file__, '--torch_worker', f'--size={args.size}', f'--batch={args.batch}',
          f'--steps={args.steps}', f'--dtype={args.dtype}'] + (['--compile'] if args.compile else [])
  if args.smoke:
    argv.append('--smoke')
  out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=3600)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--size', choices=sorted(SIZES), default='nanogpt')
  p.add_argument('--batch', type=int, default=0, help='0: the size preset\'s batch')
  p.add_argument('--steps', type=int, default=0, help='timed steps per round; 0: the preset\'s')
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                 help='compute dtype (config.model.dtype); parameters stay float32')
  p.add_argument('--torch', action='store_true', help='also time the PyTorch GPT')
  p.add_argument('--compile', action='store_true', help='torch.compile the PyTorch GPT')
  p.add_argument('--steps_per_call', type=int, default=1,
                 help='> 1: also time this many steps per device call (train.steps_per_call)')
  p.add_argument('--smoke', action='store_true', help='one tiny step, one round: no timing value')
  p.add_argument('--system_malloc', action='store_true',
                 help="keep the C library's allocator defaults (launch.py's --nokeep_freed_memory)")
  p.add_argument('--torch_worker', action='store_true', help=argparse.SUPPRESS)
  args = p.parse_args()
  args.layers, args.heads, args.width, args.block, batch, steps = SIZES[args.size]
  args.batch, args.steps = args.batch or batch, args.steps or steps
  if args.smoke:
    args.layers, args.heads, args.width, args.block, args.batch, args.steps = 1, 2, 32, 16, 4, 1
    args.rounds = 1
  tokens = np.random.default_rng(0).integers(0, 256, (args.batch, args.block + 1)).astype(np.int32)
  if args.torch_worker:  # one round of the PyTorch step, in a process of its own
    step, label = torch_step(args, tokens)
    print(json.dumps({'label': label, 's': benchlib.timeit(step, args.steps, warmup=1, rounds=1)}
                     if step else {'label': label}))
    return
  if not args.system_malloc:
    hostmem.keep_freed_memory()  # before JAX's first computation, as launch.py does
  sizes = (1024, 2048, 4096) if jax.default_backend() != 'cpu' else (512, 1024, 2048)
  if args.smoke:
    sizes = (64,)

  config = ar_config.get_config('pysrc')
  config.model.num_layers, config.model.num_heads, config.model.width = args.layers, args.heads, args.width
  config.data.seq_len, config.data.batch_size = args.block, args.batch
  config.model.dropout, config.model.dtype = 0.0, args.dtype
  info = DatasetInfo('bench', 'text', (args.block + 1,), 256, 0, {})
  family = ar.build(config, info)
  state = family.init(jax.random.PRNGKey(0), {'tokens': tokens})

  step = parallel.train_step(family.train_step)
  batch = parallel.shard({'tokens': tokens})
  holder = [parallel.replicate(state)]

  def full_step():
    holder[0], metrics = step(holder[0], batch, jax.random.PRNGKey(0))
    return metrics

  compile_s, _ = benchlib.first_call(full_step)
  k = args.steps_per_call
  if k > 1:  # the same steps, k per call: parallel.train_steps, as the trainer runs them
    steps_fn = parallel.train_steps(family.train_step)
    stacked = parallel.shard_steps([{'tokens': tokens}] * k)
    step_ids = np.arange(k, dtype=np.int32)

    def k_steps():
      holder[0], metrics = steps_fn(holder[0], stacked, jax.random.PRNGKey(0), step_ids)
      return metrics

    compile_k, _ = benchlib.first_call(k_steps)
  dt_k = float('inf')
  faults = [0, 0]  # minor page faults, steps: over the single-step rounds
  t_step, why = (torch_round, None) if args.torch else (None, 'not run (--torch)')
  dt_step = dt_torch = float('inf')
  for _ in range(args.rounds):  # interleaved: both see the same machine state
    before = benchlib.page_faults()
    dt_step = min(dt_step, benchlib.timeit(full_step, args.steps, warmup=1, rounds=1))
    faults = [faults[0] + benchlib.page_faults() - before, faults[1] + args.steps + 1]
    if k > 1:
      calls = max(1, -(-args.steps // k))
      dt_k = min(dt_k, benchlib.timeit(k_steps, calls, warmup=1, rounds=1) / k)
    if t_step is not None:
      result = t_step(args)
      why = result['label']
      if 's' not in result:
        t_step = None
      else:
        dt_torch = min(dt_torch, result['s'])

  # Split: forward only, forward + backward (no device mapping, no optimizer).
  model = ar.make_model(config, info)
  tok = jnp.asarray(tokens)

  def loss(params):
    return ar.token_nll(model, params, tok, 256).mean()

  fwd, fwd_bwd = jax.jit(loss), jax.jit(jax.value_and_grad(loss))
  dt_fwd = benchlib.timeit(lambda: fwd(state.params), args.steps, rounds=args.rounds)
  dt_fwd_bwd = benchlib.timeit(lambda: fwd_bwd(state.params), args.steps, rounds=args.rounds)

  peak = matmul_peak(sizes, jnp.dtype(args.dtype))
  kind = jax.devices()[0].device_kind
  sheet = next((v[args.dtype] for k, v in DATASHEET.items() if k in kind), None)
  tokens_per_step = args.batch * args.block
  flops_tok = model_flops_per_token(args.layers, args.width, args.block, 256)
  achieved = flops_tok * tokens_per_step / dt_step
  print(f'machine: {benchlib.machine()}')
  print(f'setting: {args.size}: {args.layers} layers, {args.heads} heads, width {args.width}, '
        f'block {args.block}, batch {args.batch}, {args.dtype}')
  print(f'compile (first step): {compile_s:.2f} s')
  print(f'genjax train step: {dt_step * 1e3:.2f} ms  ->  {tokens_per_step / dt_step:,.0f} tokens/s; '
        f'{faults[0] / faults[1]:,.0f} minor page faults a step (host memory: '
        f'{"the C library default" if args.system_malloc else "genjax.hostmem"})')
  if k > 1:
    print(f'  {k} steps per device call: {dt_k * 1e3:.2f} ms/step  ->  '
          f'{tokens_per_step / dt_k:,.0f} tokens/s, {dt_step / dt_k:.2f}x one step per call '
          f'(compile {compile_k:.2f} s)')
  print(f'  forward {dt_fwd * 1e3:.2f} ms | forward+backward {dt_fwd_bwd * 1e3:.2f} ms | '
        f'optimizer, pmean and dispatch {max(dt_step - dt_fwd_bwd, 0) * 1e3:.2f} ms')
  if t_step is not None:
    print(f'{why} train step: {dt_torch * 1e3:.2f} ms  ->  {tokens_per_step / dt_torch:,.0f} tokens/s')
    print(f'genjax / torch tokens/s: {dt_torch / dt_step:.2f}x')
  else:
    print(f'torch: {why}')
  print(f'model FLOPs/token: {flops_tok / 1e6:.2f} M')
  print(f'{args.dtype} matmul peak (measured, sizes {sizes}): {peak / 1e9:,.1f} GFLOP/s'
        + (f'; datasheet {sheet:g} TFLOP/s' if sheet else '; datasheet: not known for this device'))
  mfu = 100 * achieved / peak
  print(f'achieved: {achieved / 1e9:,.1f} GFLOP/s  ->  MFU {mfu:.1f}% of the measured peak')
  ratio = f'{dt_torch / dt_step:.2f}x' if t_step is not None else 'n/a'
  benchlib.table(['size', 'dtype', 'genjax ms/step', 'tokens/s', 'torch ms/step', 'ratio', 'MFU',
                  'compile s'],
                 [[args.size, args.dtype, f'{dt_step * 1e3:.1f}', f'{tokens_per_step / dt_step:,.0f}',
                   f'{dt_torch * 1e3:.1f}' if t_step is not None else 'n/a', ratio, f'{mfu:.0f}%',
                   f'{compile_s:.1f}']])


if __name__ == '__main__':
  main()
