"""The generic train step's skip rule: a step whose loss, gradients or resulting state are not finite
leaves params, optimizer state and buffers exactly as they were and counts one skip (the NaN-loss
path through the whole trainer is in test_checkpoint_safety.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_jax.train import step as step_lib
from ssl_jax.train.state import TrainState


class _Method:
  """Least squares; ``after_update`` writes ``scale`` into a buffer (inf to poison the state)."""

  def __init__(self, scale=1.0):
    self.scale = scale

  def views(self, batch, key):
    del key
    return batch

  def loss(self, params, state, views, key):
    del key
    loss = jnp.mean((views['x'] @ params['w'] - views['y']) ** 2)
    return loss, ({}, state.buffers)

  def after_update(self, state):
    return state.replace(buffers=dict(state.buffers, ema=state.buffers['ema'] * self.scale))


def _state(lr):
  """SGD at ``lr``; ``lr=None``: a finite gradient times 1e30 twice, an infinite update."""
  tx = optax.sgd(lr) if lr else optax.chain(optax.scale(-1e30), optax.scale(1e30))
  params = {'w': jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)}
  return TrainState.create(params=params, tx=tx,
                           buffers={'ema': jnp.ones((4,), jnp.float32),
                                    'count': jnp.zeros((), jnp.int32)})


BATCH = {'x': jnp.asarray(np.random.default_rng(1).normal(size=(8, 5)), jnp.float32),
         'y': jnp.asarray(np.random.default_rng(2).normal(size=(8, 3)), jnp.float32)}


def test_all_finite_sees_every_kind_of_non_finite_value_under_jit():
  check = jax.jit(step_lib._all_finite)  # pylint: disable=protected-access
  big = jnp.full((3,), 3e38, jnp.float32)   # finite, and its square sum would overflow
  ints = jnp.array([1, 2], jnp.int32)
  assert bool(check({'a': big, 'b': ints, 'c': jnp.ones((2, 2), jnp.bfloat16)}))
  for bad in (jnp.nan, jnp.inf, -jnp.inf):
    for dtype in (jnp.float32, jnp.bfloat16):
      leaf = jnp.zeros((4, 3), dtype).at[2, 1].set(bad)
      assert not bool(check({'a': big, 'b': leaf, 'c': ints})), (bad, dtype)


@pytest.mark.parametrize('backend', ['cpu', 'gpu'])
def test_keep_if_picks_the_whole_tree(backend, monkeypatch):
  # 'cpu' takes one lax.cond, any other backend a per-leaf select; both give the same trees.
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  new = {'a': jnp.arange(3.0), 'b': (jnp.ones((2,), jnp.int32), jnp.zeros((1, 2)))}
  old = jax.tree_util.tree_map(lambda x: x + 7, new)
  keep = jax.jit(step_lib._keep_if)  # pylint: disable=protected-access
  for ok, want in ((True, new), (False, old)):
    got = keep(jnp.asarray(ok), new, old)
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)


@pytest.mark.parametrize('case', ['finite', 'params_overflow', 'buffers_poisoned'])
def test_a_step_with_a_non_finite_state_is_skipped(case):
  lr, scale = {'finite': (0.1, 2.0), 'params_overflow': (None, 2.0),
               'buffers_poisoned': (0.1, np.inf)}[case]
  state = _state(lr)
  new, metrics = jax.jit(step_lib.make_train_step(_Method(scale), 0))(state, BATCH)
  # The loss and the gradient were finite in every case; only the updated state was not.
  assert np.isfinite(float(metrics['loss'])) and np.isfinite(float(metrics['grad_norm']))
  assert int(new.step) == 1
  if case == 'finite':
    assert int(metrics['nonfinite']) == 0 and int(new.skipped) == 0
    np.testing.assert_array_equal(new.buffers['ema'], 2 * np.ones(4))
    assert not np.array_equal(new.params['w'], state.params['w'])
    return
  assert int(metrics['nonfinite']) == 1 and int(new.skipped) == 1
  for a, b in zip(jax.tree_util.tree_leaves((new.params, new.opt_state, new.buffers)),
                  jax.tree_util.tree_leaves((state.params, state.opt_state, state.buffers))):
    np.testing.assert_array_equal(a, b)
