"""genjax.flops: the compute the comparison's budget is counted in."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from genjax import families, flops
from genjax.data import Dataset


def test_matmuls_and_convolutions_count_two_flops_per_multiply_add():
  a, b = jnp.ones((8, 16, 32)), jnp.ones((32, 24))
  assert flops.of(lambda a, b: a @ b, a, b) == 2 * 8 * 16 * 24 * 32
  x = jnp.ones((4, 8, 8, 3))
  conv = nn.Conv(5, (3, 3), strides=(2, 2), padding='SAME')
  params = conv.init(jax.random.PRNGKey(0), x)
  assert flops.of(conv.apply, params, x) == 2 * (4 * 4 * 4 * 5) * 3 * 9 + 4 * 4 * 4 * 5  # + bias
  # A transposed convolution is counted without the zeros it inserts: a stride-2
  # 2x2 kernel touches each input pixel once per output channel.
  up = nn.ConvTranspose(5, (2, 2), strides=(2, 2))
  params = up.init(jax.random.PRNGKey(0), x)
  assert flops.of(up.apply, params, x) == 2 * (4 * 8 * 8 * 3) * 5 * 4 + 4 * 16 * 16 * 5


def test_loops_are_multiplied_out_where_xla_counts_the_body_once():
  w = jnp.ones((64, 64))

  def looped(x):
    return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=10)[0]

  x = jnp.ones((32, 64))
  one = 2 * 32 * 64 * 64 + 32 * 64  # a matmul and a tanh
  assert flops.of(looped, x) == 10 * one
  xla = jax.jit(looped).lower(x).compile().cost_analysis()['flops']
  assert xla < 0.5 * flops.of(looped, x)  # why the budget counts the jaxpr


def test_a_loop_free_train_step_matches_xla_cost_analysis(tiny_config):
  config = tiny_config()
  data = Dataset(config.data, seed=0)
  family = families.build(config, data.info)
  batch = data.train_batch(0)
  ours = flops.train_step(family, batch)
  state = jax.eval_shape(lambda: family.init(jax.random.PRNGKey(0), batch))
  step = jax.vmap(family.train_step, in_axes=(None, None, None), axis_name='data', axis_size=1)
  xla = jax.jit(step).lower(state, batch, jax.random.PRNGKey(0)).compile().cost_analysis()['flops']
  assert ours == pytest.approx(xla, rel=0.15)
  # Twice the batch: about twice the step (the optimizer's share does not grow).
  double = {k: jnp.concatenate([v, v]) for k, v in batch.items()}
  assert 1.6 * ours < flops.train_step(family, double) < 2.0 * ours
