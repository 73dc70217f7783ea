"""Autoregressive family: KV-cache decoding, causality, exact likelihood."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.data.pipeline import DatasetInfo
from genjax.families import autoregressive as ar
from genjax.nn.transformer import Transformer
from genjax import parallel


def make_model(positions='rotary', max_len=12, vocab=11):
  model = Transformer(vocab_size=vocab, max_len=max_len, num_layers=2, num_heads=2, width=16,
                      positions=positions)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, max_len), jnp.int32))['params']
  return model, params


def jitted(model):
  """model.apply compiled whole (eagerly, each of its operations compiles on its own)."""
  return jax.jit(lambda params, tokens, cache=None, index=None: model.apply(
      {'params': params}, tokens, cache=cache, index=index), static_argnames='index')


@pytest.mark.parametrize('positions', ['rotary', 'learned'])
def test_kv_cache_logits_equal_full_forward(positions):
  # conftest runs float32 matmuls at 'highest' precision, so 1e-5 holds on a GPU too
  # (its TF32 default gives differences of ~3e-4).
  model, params = make_model(positions)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 12), 0, 11)
  apply = jitted(model)
  full, _ = apply(params, tokens)
  # prefill 5 tokens, then feed the rest one at a time from the cache
  cache = model.init_cache(3)
  logits, cache = apply(params, tokens[:, :5], cache=cache, index=0)
  steps = [logits]
  for t in range(5, 12):
    logits, cache = apply(params, tokens[:, t:t + 1], cache=cache, index=t)
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('positions', ['rotary', 'learned'])
def test_model_is_causal(positions):
  """Changing any future token leaves logits 0..t unchanged; a past one does not."""
  model, params = make_model(positions)
  tokens = jax.random.randint(jax.random.PRNGKey(2), (1, 12), 0, 11)
  t = 6

  base = model.apply({'params': params}, tokens)[0]
  future = tokens.at[0, t + 1:].set((tokens[0, t + 1:] + 1) % 11)
  past = tokens.at[0, t].set((tokens[0, t] + 1) % 11)
  np.testing.assert_allclose(model.apply({'params': params}, future)[0][0, :t + 1], base[0, :t + 1],
                             atol=1e-6)
  assert np.abs(model.apply({'params': params}, past)[0][0, t] - base[0, t]).max() > 1e-4


def test_remat_keeps_the_params_and_the_training_forward():
  """model.remat only trades memory for compute (jax.checkpoint keeps the gradients):
  the same parameter names and shapes, so checkpoints carry over, and the same
  training forward pass (`train` must stay a Python bool inside the remat)."""
  kw = dict(vocab_size=11, max_len=12, num_layers=1, num_heads=2, width=16)
  plain, remat = Transformer(**kw), Transformer(**kw, remat=True)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 12), 0, 11)
  params = jax.jit(plain.init)(jax.random.PRNGKey(0), tokens)['params']
  shapes = jax.eval_shape(remat.init, jax.random.PRNGKey(0), tokens)['params']
  assert jax.tree_util.tree_map(jnp.shape, shapes) == jax.tree_util.tree_map(jnp.shape, params)
  rngs = {'dropout': jax.random.PRNGKey(2)}
  a, b = [jax.jit(lambda p, m=m: m.apply({'params': p}, tokens, train=True, rngs=rngs)[0])(params)
          for m in (plain, remat)]
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_greedy_decode_equals_repeated_full_forward():
  model, params = make_model(max_len=12)
  prompt = jnp.array([[3, 1, 4], [1, 5, 9]], jnp.int32)
  got = ar.decode(model, params, prompt, 10, jax.random.PRNGKey(0), temperature=0.0)
  seq = prompt
  apply = jitted(model)
  for _ in range(10):  # the training forward pass, no cache, growing sequence
    # Padded to the context (one compile): the model is causal (test_model_is_causal).
    logits, _ = apply(params, jnp.pad(seq, ((0, 0), (0, 12 - seq.shape[1]))))
    next_token = jnp.argmax(logits[:, seq.shape[1] - 1], -1)[:, None].astype(jnp.int32)
    seq = jnp.concatenate([seq, next_token], 1)
  np.testing.assert_array_equal(got, seq[:, 3:])


def test_decoding_without_the_cache_draws_the_same_tokens():
  model, params = make_model(max_len=12)
  prompt = jnp.array([[3, 1, 4], [1, 5, 9]], jnp.int32)
  rng = jax.random.PRNGKey(1)
  for opts in (dict(temperature=0.0), dict(temperature=0.8, top_k=5)):
    cached = ar.decode(model, params, prompt, 10, rng, **opts)  # fills the window: 3 + 10 = 12 + 1
    np.testing.assert_array_equal(ar.decode_recompute(model, params, prompt, 10, rng, **opts),
                                  cached)
  with pytest.raises(ValueError, match='context length'):
    ar.decode_recompute(model, params, prompt, 11, rng)


def test_decode_rejects_too_long_request():
  model, params = make_model(max_len=12)
  with pytest.raises(ValueError, match='context length'):
    ar.decode(model, params, jnp.zeros((1, 4), jnp.int32), 10, jax.random.PRNGKey(0))


def test_image_likelihood_is_normalised(tiny_config):
  """exp(-NLL) summed over every possible 2-pixel, 3-level image is exactly 1."""
  config = tiny_config('digits')
  info = DatasetInfo('toy', 'image', (2, 1, 1), 3, 0, {'train': 9})
  family = ar.build(config, info)
  images = np.array(list(itertools.product(range(3), repeat=2)), np.uint8).reshape(9, 2, 1, 1)
  state = family.init(jax.random.PRNGKey(0), {'image': images})
  # Train a few steps so the model is not near-uniform.
  step = parallel.train_step(family.train_step, devices=jax.devices()[:1])
  rstate = parallel.replicate(state, 1)
  batch = parallel.shard({'image': np.repeat(images[:3], 4, 0)}, 1)
  for i in range(5):
    rstate, _ = step(rstate, batch, jax.random.PRNGKey(i))
  state = parallel.unreplicate(rstate)
  total = 0.0
  for image in images:
    sums = family.eval_step(state, {'image': image[None], 'mask': np.ones(1, bool)},
                            jax.random.PRNGKey(0))
    assert float(sums['dims']) == 2
    total += np.exp(-float(sums['nll']))
  np.testing.assert_allclose(total, 1.0, rtol=1e-5)


def test_text_samples_extend_past_the_context(tiny_config):
  config = tiny_config('pysrc')
  config.sample.length = 40  # > seq_len 16: decoding re-prefills the context
  config.sample.prompt = 'def '
  info = DatasetInfo('toy', 'text', (17,), 256, 0, {'train': 100})
  family = ar.build(config, info)
  state = family.init(jax.random.PRNGKey(0), {'tokens': np.zeros((2, 17), np.int32)})
  out = family.sample(state, jax.random.PRNGKey(1), 3)['tokens']
  assert out.shape == (3, 44)
  assert bytes(out[0, :4].astype(np.uint8).tolist()) == b'def '
  assert out.min() >= 0 and out.max() < 256
