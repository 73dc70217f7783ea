"""Token sampling shared by every family that emits discrete tokens.

`filter_logits` applies temperature, then top-k, then top-p (nucleus) to a
vector of logits; `sample_tokens` draws from the result, with temperature 0
meaning greedy argmax. All options may be traced values, so changing them does
not recompile a jitted decoder.
"""
import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def filter_logits(logits_BxV, temperature=1.0, top_k=0, top_p=1.0):
  """Returns logits whose softmax is the filtered sampling distribution.

  Args:
    logits_BxV: unnormalised log-probabilities.
    temperature: divides the logits (must be > 0 here; 0 is handled by
      `sample_tokens`).
    top_k: keep the k largest logits; 0 keeps all. Ties with the k-th value are
      kept.
    top_p: keep the smallest set of most likely tokens whose probability mass
      reaches top_p (computed after temperature and top-k); 1.0 keeps all.
  """
  logits = logits_BxV.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
  V = logits.shape[-1]
  sorted_desc = -jnp.sort(-logits, axis=-1)
  k = jnp.where(top_k > 0, jnp.minimum(top_k, V), V)
  kth = jnp.take_along_axis(sorted_desc, jnp.broadcast_to(k - 1, logits.shape[:-1])[..., None], -1)
  logits = jnp.where(logits < kth, NEG_INF, logits)
  # Nucleus: a token survives if the mass of strictly more likely tokens is < top_p.
  sorted_desc = jnp.where(sorted_desc < kth, NEG_INF, sorted_desc)
  probs_sorted = jax.nn.softmax(sorted_desc, axis=-1)
  mass_before = jnp.cumsum(probs_sorted, axis=-1) - probs_sorted
  keep_sorted = (mass_before < top_p).at[..., 0].set(True)  # the most likely token always stays
  # The smallest kept logit is the threshold.
  threshold = jnp.min(jnp.where(keep_sorted, sorted_desc, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits < threshold, NEG_INF, logits)


def sample_tokens(rng, logits_BxV, temperature=1.0, top_k=0, top_p=1.0):
  """Samples one token per row; temperature == 0 gives argmax."""
  greedy = jnp.argmax(logits_BxV, axis=-1)
  filtered = filter_logits(logits_BxV, temperature, top_k, top_p)
  drawn = jax.random.categorical(rng, filtered, axis=-1)
  return jnp.where(temperature > 0, drawn, greedy).astype(jnp.int32)
