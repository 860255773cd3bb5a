"""Online linear evaluation (BYOL): the head learns, never changes the pretraining trajectory,
is device-count invariant, and survives a checkpoint."""
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import simclr
from ssl_jax.data import pipeline, sources
from ssl_jax.methods import online
from ssl_jax.train import loop, sharding
from tests import helpers


def _config(online: bool, steps: int = 3, batch: int = 32):
  c = helpers.tiny(simclr.get_config('builtin'), batch_size=batch, steps=steps)
  c.eval.online_linear = online
  c.eval.online_lr = 0.1
  return c


@pytest.fixture(scope='module')
def runs():
  return {'on8': helpers.run_steps(_config(True), 8, 3),
          'on1': helpers.run_steps(_config(True), 1, 3),
          'off8': helpers.run_steps(_config(False), 8, 3)}


def test_online_head_does_not_change_pretraining(runs):
  on, off = runs['on8'][0], runs['off8'][0]
  assert set(on.buffers) == {'method', 'online'} and 'online' not in off.buffers
  helpers.assert_trees_close(on.params, off.params, rtol=1e-6, atol=1e-7)
  helpers.assert_trees_close(on.buffers['method'], off.buffers, rtol=1e-6, atol=1e-7)
  for m_on, m_off in zip(runs['on8'][1], runs['off8'][1]):
    assert m_on['loss'] == pytest.approx(m_off['loss'], rel=1e-6)
    assert 0.0 <= m_on['online_top1'] <= 1.0 and np.isfinite(m_on['online_loss'])
  # Zero-initialised head: the first step's loss is exactly log(num_classes).
  assert runs['on8'][1][0]['online_loss'] == pytest.approx(np.log(10), rel=1e-5)
  assert np.abs(jax.device_get(on.buffers['online']['head']['kernel'])).max() > 0


def test_online_head_one_vs_eight_devices(runs):
  helpers.assert_trees_close(runs['on1'][0].buffers['online'], runs['on8'][0].buffers['online'],
                             rtol=1e-3, atol=1e-5)


class _PixelMethod:
  """A stand-in Method whose frozen features are the raw pixels (a known-good feature)."""
  feature_dim = 64

  def crop_specs(self):
    return (pipeline.CropSpec('view0', 8),)

  def features(self, params, buffers, images):
    return images[..., 0].reshape(images.shape[0], -1).astype(jnp.float32) / 255.0


def test_online_head_learns_on_a_known_good_feature():
  """200 SGD steps of the online head on raw 8x8 digit pixels reach the accuracy an offline
  linear classifier gets on them (~0.95), measured on batches before fitting them."""
  src = sources.builtin_source('digits', 'train')
  wrapper = online.OnlineLinear(_PixelMethod(), _config(True), num_classes=10)
  head = {'kernel': jnp.zeros((64, 10)), 'bias': jnp.zeros((10,))}
  buffers = {'method': {}, 'online': {'head': head, 'opt': wrapper.tx.init(head)}}
  update = jax.jit(wrapper._online_update)  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  top1 = []
  for _ in range(200):
    idx = rng.integers(0, len(src), 64)
    online_state, m = update({}, buffers, src.images[idx], src.labels[idx])
    buffers = {'method': {}, 'online': online_state}
    top1.append(float(m['online_top1']))
  assert top1[0] == pytest.approx(0.0, abs=0.2)       # zero head: argmax is class 0
  assert np.mean(top1[-50:]) > 0.85, np.mean(top1[-50:])


def test_online_head_checkpoints():
  c = _config(True, steps=2)
  workdir = tempfile.mkdtemp()
  exp = loop.Experiment(c, workdir, helpers.mesh(8))
  state, _ = exp.restore_or_init()
  for i in range(c.train.steps):
    state, _ = exp.step_fn(state, sharding.global_batch(exp.mesh, exp.train_ds[i]))
  exp.save(state, exp.train_iterator(), force=True)
  exp.checkpointer.close()
  exp2 = loop.Experiment(c, workdir, helpers.mesh(8))
  restored, _ = exp2.restore_or_init()
  exp2.checkpointer.close()
  assert int(restored.step) == 2
  for a, b in zip(jax.tree_util.tree_leaves(restored.buffers['online']),
                  jax.tree_util.tree_leaves(state.buffers['online'])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
