"""The masked (absorbing-state) diffusion of bytes: its forward process, its
bound, its sampler."""
import jax
import jax.numpy as jnp
import numpy as np

from genjax.experiments import masked_diffusion as md_config
from genjax import families, parallel
from genjax.data import Dataset
from genjax.families import masked_diffusion as md


def test_masking_has_the_closed_form_marginal():
  # q(z_i = MASK | x) = t independently per token, and z_i = x_i otherwise.
  n, T = 4000, 16
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (n, T)), jnp.int32)
  for t in (0.1, 0.5, 0.9):
    keys = jax.random.split(jax.random.PRNGKey(int(t * 10)), n)
    z, masked = md.mask_tokens(keys, x, jnp.full((n,), t), 256)
    z, masked = np.asarray(z), np.asarray(masked)
    np.testing.assert_array_equal(z[~masked], np.asarray(x)[~masked])
    assert np.all(z[masked] == 256)
    se = np.sqrt(t * (1 - t) / (n * T))
    assert abs(masked.mean() - t) < 4 * se, (t, masked.mean())
    # Independent across positions: the per-position rates agree too.
    assert np.all(np.abs(masked.mean(0) - t) < 4 * np.sqrt(t * (1 - t) / n))


def _family(**overrides):
  config = md_config.get_config('pysrc,smoke')
  for k, v in overrides.items():
    config.model[k] = v
  data = Dataset(config.data, seed=0)
  return config, data, families.build(config, data.info)


def test_a_uniform_denoiser_has_a_bound_of_log_256_per_byte():
  # All-zero parameters: zero embeddings, so the logits are 0 and p = 1/256 everywhere.
  config, data, family = _family()
  state = family.init(jax.random.PRNGKey(0), data.train_batch(0))
  state = state.replace(params=jax.tree_util.tree_map(jnp.zeros_like, state.params))
  batch = data.train_batch(0)
  n = 2048
  tokens = np.concatenate([data.train_batch(s)['tokens'] for s in range(n // len(batch['tokens']))])
  per = []
  for i in range(0, len(tokens), 256):  # one example at a time gives the per-example spread
    out = family.eval_step(state, {'tokens': tokens[i:i + 256], 'mask': np.ones(256, bool)},
                           jax.random.PRNGKey(i))
    per.append(float(out['nll']) / float(out['dims']))
  per = np.asarray(per)
  assert abs(per.mean() - np.log(256)) < 4 * per.std(ddof=1) / np.sqrt(len(per)) + 1e-3, per
  # and the estimate is exact per draw when every byte is masked with weight 1/t:
  T = tokens.shape[1] - 1
  x = jnp.asarray(tokens[:8, 1:], jnp.int32)
  est = md.nelbo(lambda z: jnp.zeros(z.shape + (257,)), x, jnp.ones(8), jnp.ones(8),
                 jax.random.split(jax.random.PRNGKey(0), 8), 256, 256)
  np.testing.assert_allclose(np.asarray(est) / T, np.log(256), rtol=1e-6)


def test_as_many_steps_as_tokens_unmasks_one_token_per_step_and_keeps_the_prompt():
  config, data, family = _family()
  state = family.init(jax.random.PRNGKey(0), data.train_batch(0))
  T = data.info.shape[0] - 1
  P = 5
  prompt = np.zeros((3, T), np.int32)
  prompt[:, :P] = np.frombuffer(b'def f', np.uint8)
  logits_fn = family.tools['logits_fn'](state.params)
  for steps in (T - P, 3):
    z, counts = md.generate(logits_fn, jnp.asarray(prompt), P, steps, jax.random.PRNGKey(steps),
                            256, 256)
    z, counts = np.asarray(z), np.asarray(counts)
    np.testing.assert_array_equal(z[:, :P], prompt[:, :P])
    assert np.all(counts[-1] == 0) and np.all(z < 256)
    if steps == T - P:
      np.testing.assert_array_equal(counts, np.broadcast_to((T - P - 1 - np.arange(steps))[:, None],
                                                            counts.shape))
  # Through the family's own sampler: the prompt leads every sample.
  out = family.sample(state, jax.random.PRNGKey(1), 2)
  assert all(bytes(row[:len(config.sample.prompt)].astype(np.uint8)) == config.sample.prompt.encode()
             for row in out['tokens'])


def test_training_lowers_the_bound_on_pysrc():
  config, data, family = _family(num_layers=1, width=64, num_heads=2)
  config.optim.lr, config.optim.warmup_steps = 3e-3, 5
  family = families.build(config, data.info)
  state = family.init(jax.random.PRNGKey(0), data.train_batch(0))
  one = jax.devices('cpu')[:1]
  step = parallel.train_step(family.train_step, devices=one)
  evaluate = jax.jit(family.eval_step)
  held = {'tokens': data.train_batch(10_000)['tokens'], 'mask': np.ones(16, bool)}

  def bound(state):
    outs = [evaluate(state, held, jax.random.PRNGKey(k)) for k in range(8)]
    return sum(float(o['nll']) for o in outs) / sum(float(o['dims']) for o in outs)

  before = bound(state)
  rstate = parallel.replicate(state, one)
  for s in range(60):
    rstate, metrics = step(rstate, parallel.shard(data.train_batch(s), 1), jax.random.PRNGKey(s))
  after = bound(parallel.unreplicate(rstate))
  assert np.all(np.isfinite(np.asarray(metrics['loss'])))
  assert after < before - 1.0, (before, after)  # 5.5 nats/byte (uniform) to the unigram level


def test_the_two_stream_pass_gives_each_block_what_the_sampler_reads():
  # Training reads block b of the noised window beside the clean window; the
  # sampler reads the window with blocks < b clean, block b noised and the later
  # blocks anything, under the block-causal mask. Block b's logits must agree.
  config, data, family = _family(block_size=8)
  T, K = data.info.shape[0] - 1, 8
  params = family.init(jax.random.PRNGKey(0), data.train_batch(0)).params
  model = md.make_model(config, data.info)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 256, (2, T)), jnp.int32)
  z = jnp.where(jnp.asarray(rng.random((2, T)) < 0.5), 256, x)
  two = model.apply({'params': params}, jnp.concatenate([z, x], 1),
                    positions_T=jnp.concatenate([jnp.arange(T)] * 2),
                    mask_TxS=md.two_stream_mask(T, K))[0][:, :T]
  for b in (0, 3, T // K - 1):
    seen = jnp.where(jnp.arange(T) < b * K, x, jnp.where(jnp.arange(T) < (b + 1) * K, z, 7))
    one = family.tools['logits_fn'](params)(seen)
    np.testing.assert_allclose(np.asarray(two[:, b * K:(b + 1) * K]),
                               np.asarray(one[:, b * K:(b + 1) * K]), rtol=2e-4, atol=2e-4)


def test_blocks_of_one_byte_give_the_exact_autoregressive_likelihood():
  # With K = 1 every byte is masked with weight 1 and sees the clean bytes before
  # it: the bound is the chain rule's -sum_i log p(x_i | x_<i), which one pass of
  # the block-causal model over [all MASK, x] gives, on every draw.
  config, data, family = _family(block_size=1)
  T = data.info.shape[0] - 1
  state = family.init(jax.random.PRNGKey(1), data.train_batch(0))
  batch = {'tokens': data.train_batch(0)['tokens'][:4], 'mask': np.ones(4, bool)}
  x = jnp.asarray(batch['tokens'][:, 1:], jnp.int32)
  model = md.make_model(config, data.info)
  logits = model.apply({'params': state.params}, jnp.concatenate([jnp.full_like(x, 256), x], 1),
                       positions_T=jnp.concatenate([jnp.arange(T)] * 2),
                       mask_TxS=md.two_stream_mask(T, 1))[0][:, :T, :256]
  exact = -float(jnp.take_along_axis(jax.nn.log_softmax(logits), x[..., None], -1).sum())
  for k in range(3):
    np.testing.assert_allclose(float(family.eval_step(state, batch, jax.random.PRNGKey(k))['nll']),
                               exact, rtol=1e-5)
  # Masking a byte in the clean stream (a causal LM's future) changes nothing
  # before it: the bytes before position 5 do not see it.
  x2 = x.at[:, 5].set((x[:, 5] + 1) % 256)
  logits2 = model.apply({'params': state.params}, jnp.concatenate([jnp.full_like(x, 256), x2], 1),
                        positions_T=jnp.concatenate([jnp.arange(T)] * 2),
                        mask_TxS=md.two_stream_mask(T, 1))[0][:, :T, :256]
  np.testing.assert_allclose(np.asarray(logits2[:, :6]), np.asarray(logits[:, :6]), atol=1e-5)
  assert not np.allclose(np.asarray(logits2[:, 6:]), np.asarray(logits[:, 6:]), atol=1e-5)


def test_the_any_order_estimate_has_the_continuous_time_bound_as_its_mean():
  # mask_subsets (k ~ U{1..K}, weight K/k) and the t-integral (t = u^2, weight
  # 2/u) estimate the same NELBO of one denoiser: their means agree within
  # Monte-Carlo error, and the any-order one has the smaller spread.
  config, data, family = _family()
  T = data.info.shape[0] - 1
  params = family.init(jax.random.PRNGKey(2), data.train_batch(0)).params
  fn = family.tools['logits_fn'](params)
  x = jnp.asarray(data.train_batch(0)['tokens'][:1, 1:], jnp.int32)
  n = 4000
  xs = jnp.broadcast_to(x, (n, T))
  keys = jax.random.split(jax.random.PRNGKey(3), n)
  any_order = np.asarray(md.block_nelbo(fn, xs, keys, T, 256, 256))
  u = jax.random.uniform(jax.random.PRNGKey(4), (n,))
  t, w = md.eval_times(u)
  integral = np.asarray(md.nelbo(fn, xs, t, w, keys, 256, 256))
  se = np.sqrt(any_order.var() / n + integral.var() / n)
  assert abs(any_order.mean() - integral.mean()) < 4 * se, (any_order.mean(), integral.mean(), se)
  assert any_order.std() < integral.std()


def test_the_block_sampler_fills_blocks_left_to_right_one_byte_per_step():
  config, data, family = _family(block_size=8)
  T, K = data.info.shape[0] - 1, 8
  state = family.init(jax.random.PRNGKey(0), data.train_batch(0))
  for text in (b'def f(x)', b'def f'):  # a whole block of prompt (skipped), then part of one
    P = len(text)
    prompt = np.zeros((3, T), np.int32)
    prompt[:, :P] = np.frombuffer(text, np.uint8)
    z, counts = family.tools['generate'](state.params, jnp.asarray(prompt), jax.random.PRNGKey(P),
                                         P, K, 1.0, 0, 1.0)
    z, counts = np.asarray(z), np.asarray(counts)
    np.testing.assert_array_equal(z[:, :P], prompt[:, :P])
    assert np.all(z < 256) and np.all(counts[-1] == 0)
    assert len(counts) == (T // K - P // K) * K  # K steps for each block with bytes to draw
    # After block b's K steps every byte up to its end is drawn, none after it.
    left = T - K * (P // K + 1 + np.arange(len(counts) // K))
    np.testing.assert_array_equal(counts[K - 1::K], np.broadcast_to(left[:, None], (len(left), 3)))
    if P % K == 0:  # then every block draws K bytes in K steps: exactly one per step
      np.testing.assert_array_equal(counts, np.broadcast_to(
          (T - P - 1 - np.arange(len(counts)))[:, None], counts.shape))
  assert family.tools['network_evals'] == (T // K) * config.sample.steps  # prompt 'def ' < K
