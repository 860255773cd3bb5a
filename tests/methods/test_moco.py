"""MoCo v1/v2: the queue InfoNCE loss, queue ordering, 1 vs 8 devices, checkpoint round trip.
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_contrastive.py."""
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.methods import common
from ssl_jax.methods.contrastive.moco import MoCo
from tests import helpers
from tests.methods import siamese_testlib as lib

STEPS = 3


# -- queue ----------------------------------------------------------------------------------------

def test_enqueue_is_fifo_and_overwrites_oldest():
  queue, ptr = jnp.zeros((8, 2)), jnp.zeros((), jnp.int32)
  a, b, c = (jnp.full((4, 2), v) + jnp.arange(4.0)[:, None] for v in (10.0, 20.0, 30.0))
  queue, ptr = common.enqueue(queue, ptr, a)
  assert int(ptr) == 4
  queue, ptr = common.enqueue(queue, ptr, b)
  assert int(ptr) == 0
  np.testing.assert_array_equal(queue, jnp.concatenate([a, b]))
  queue, ptr = common.enqueue(queue, ptr, c)  # the oldest batch (a) is replaced, rows in order
  assert int(ptr) == 4
  np.testing.assert_array_equal(queue, jnp.concatenate([c, b]))
  with pytest.raises(ValueError, match='multiple'):
    common.enqueue(jnp.zeros((10, 2)), ptr, a)


def test_queue_size_must_be_multiple_of_batch():
  c = lib.load_config('moco')
  c.method.queue_size = 40
  with pytest.raises(ValueError, match='config.method.queue_size'):
    MoCo(c)


# -- MoCo v1 configuration --------------------------------------------------------------------------

def test_v1_linear_head_and_step_schedule():
  c = lib.load_config('moco', 'v1_builtin', steps=100)
  method = MoCo(c)
  params = jax.eval_shape(lambda: method.init(jax.random.PRNGKey(0), {
      'view0': jnp.zeros((2, 16, 16, 3), jnp.uint8)})[0])
  assert set(params['projector']) == {'fc0'}          # one linear layer
  assert params['projector']['fc0']['kernel'].shape == (method.feature_dim, 128)
  _, lr = method.build_optimizer(100)
  peak = c.optim.lr * c.data.batch_size / 256
  np.testing.assert_allclose([lr(0), lr(59), lr(60), lr(79), lr(80), lr(99)],
                             [peak, peak, peak / 10, peak / 10, peak / 100, peak / 100], rtol=1e-6)


# -- a few real steps ------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def runs():
  c = lib.load_config('moco', 'builtin')
  c.method.queue_size = 64          # 4 global batches of 16
  c.method.proj_bn = True           # BN in the key encoder (the ViT backbone has none)
  workdir = tempfile.mkdtemp()
  exp, states, history = lib.run_and_save(c, 8, STEPS, workdir)
  state1, history1 = helpers.run_steps(c, 1, STEPS)
  return dict(config=c, exp=exp, states=states, history=history, state1=state1,
              history1=history1, workdir=workdir)


def test_one_vs_eight_devices(runs):
  s8, s1 = runs['states'][-1], runs['state1']
  np.testing.assert_allclose([h['loss'] for h in runs['history']],
                             [h['loss'] for h in runs['history1']], rtol=1e-4)
  helpers.assert_trees_close(s8.params, s1.params, rtol=2e-4, atol=1e-4)
  helpers.assert_trees_close(s8.buffers, s1.buffers, rtol=2e-4, atol=1e-4)


def test_queue_holds_the_keys_of_each_step_in_order(runs):
  exp, states, c = runs['exp'], runs['states'], runs['config']
  b = c.data.batch_size
  assert int(states[-1].buffers['queue_ptr']) == STEPS * b
  # Rows not written yet keep their initial random unit vectors.
  np.testing.assert_array_equal(states[-1].buffers['queue'][STEPS * b:],
                                states[0].buffers['queue'][STEPS * b:])

  @jax.jit
  def keys_at(step, target, batch):
    rng = jax.random.fold_in(jax.random.PRNGKey(c.seed), step)
    k_views, k_loss = jax.random.split(rng)
    views = exp.method.views(batch, k_views)
    return exp.method.keys(target, views['view1'], jax.random.split(k_loss)[1])[0]

  for t in range(STEPS):
    expected = keys_at(t, states[t].buffers['teacher'], exp.train_ds[t])
    np.testing.assert_allclose(states[t + 1].buffers['queue'][t * b:(t + 1) * b], expected,
                               rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(states[-1].buffers['queue'], axis=-1), 1.0, rtol=1e-5)


def test_key_encoder_is_constant_momentum_ema(runs):
  states, m = runs['states'], runs['config'].method.momentum
  for t in range(STEPS):
    online = {k: states[t + 1].params[k] for k in ('backbone', 'projector')}
    expected = jax.tree_util.tree_map(lambda a, b: m * a + (1 - m) * b,
                                      states[t].buffers['teacher']['params'], online)
    helpers.assert_trees_close(states[t + 1].buffers['teacher']['params'], expected, rtol=1e-5,
                               atol=1e-7)
  # The key encoder keeps its own BatchNorm running statistics from its forward passes.
  before = states[0].buffers['teacher']['batch_stats']['projector']['bn0']['mean']
  after = states[-1].buffers['teacher']['batch_stats']['projector']['bn0']['mean']
  assert not np.allclose(before, after)


def test_queue_and_key_encoder_survive_checkpoint(runs):
  restored = lib.restore(runs['config'], 8, runs['workdir'])
  saved = runs['states'][-1]
  lib.assert_trees_equal(restored.buffers, saved.buffers)
  lib.assert_trees_equal(restored.params, saved.params)
  assert int(restored.step) == STEPS
