"""The token sampler against the analytic filtered softmax."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import sampling


def reference_probs(logits, temperature, top_k, top_p):
  """Filtered sampling distribution, written independently in numpy."""
  z = np.asarray(logits, np.float64) / temperature
  order = np.argsort(-z)
  keep = np.zeros(len(z), bool)
  k = len(z) if top_k == 0 else top_k
  keep[order[:k]] = True
  p = np.where(keep, np.exp(z - z.max()), 0.0)
  p /= p.sum()
  # nucleus: walk down the (top-k filtered) order until the mass reaches top_p
  mass, nucleus = 0.0, np.zeros(len(z), bool)
  for i in order[:k]:
    nucleus[i] = True
    mass += p[i]
    if mass >= top_p:
      break
  q = np.where(nucleus, p, 0.0)
  return q / q.sum()


CASES = [(1.0, 0, 1.0), (0.5, 0, 1.0), (2.0, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.7),
         (0.7, 5, 0.8), (1.3, 2, 0.95)]


@pytest.mark.parametrize('temperature,top_k,top_p', CASES)
def test_filtered_softmax_matches_reference(temperature, top_k, top_p):
  logits = jax.random.normal(jax.random.PRNGKey(0), (3, 10)) * 2.0
  got = jax.nn.softmax(sampling.filter_logits(logits, temperature, top_k, top_p), axis=-1)
  for row in range(3):
    np.testing.assert_allclose(got[row], reference_probs(logits[row], temperature, top_k, top_p),
                               atol=1e-6)


@pytest.mark.parametrize('temperature,top_k,top_p', CASES)
def test_sample_frequencies_match_filtered_softmax(temperature, top_k, top_p):
  """Empirical frequencies of 200k draws vs the analytic distribution.

  Tolerance: 5 standard errors of a binomial proportion per token (the
  chance that any of 10 tokens exceeds it by luck is < 1e-5), and exactly zero
  mass outside the filtered support.
  """
  n = 200_000
  logits = jax.random.normal(jax.random.PRNGKey(1), (10,)) * 2.0
  expected = reference_probs(logits, temperature, top_k, top_p)
  draws = sampling.sample_tokens(jax.random.PRNGKey(2), jnp.broadcast_to(logits, (n, 10)),
                                 temperature, top_k, top_p)
  freq = np.bincount(np.asarray(draws), minlength=10) / n
  stderr = np.sqrt(expected * (1 - expected) / n)
  assert np.all(freq[expected == 0] == 0), (freq, expected)
  np.testing.assert_array_less(np.abs(freq - expected), 5 * stderr + 1e-12)


def test_temperature_zero_is_argmax():
  logits = jax.random.normal(jax.random.PRNGKey(3), (64, 50))
  for top_k, top_p in [(0, 1.0), (5, 0.5)]:
    got = sampling.sample_tokens(jax.random.PRNGKey(4), logits, 0.0, top_k, top_p)
    np.testing.assert_array_equal(got, np.argmax(logits, -1))


def test_top_k_one_and_tiny_top_p_are_greedy():
  logits = jax.random.normal(jax.random.PRNGKey(5), (64, 50))
  argmax = np.argmax(logits, -1)
  np.testing.assert_array_equal(sampling.sample_tokens(jax.random.PRNGKey(6), logits, 1.0, 1, 1.0), argmax)
  np.testing.assert_array_equal(sampling.sample_tokens(jax.random.PRNGKey(7), logits, 1.0, 0, 1e-6), argmax)


def test_top_p_zero_keeps_the_most_likely_token():
  logits = jnp.array([[0.0, 5.0, 1.0]])
  for top_p in (0.0, -1.0):
    assert int(sampling.sample_tokens(jax.random.PRNGKey(0), logits, 1.0, 0, top_p)[0]) == 1


def test_options_are_traced_without_recompiling():
  fn = jax.jit(sampling.sample_tokens)
  logits = jnp.zeros((2, 5))
  for t, k, p in [(1.0, 0, 1.0), (0.5, 2, 0.9), (0.0, 1, 0.3)]:
    fn(jax.random.PRNGKey(0), logits, t, k, p)
  assert fn._cache_size() == 1
