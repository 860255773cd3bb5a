"""SwAV: Sinkhorn-Knopp marginals and values, the swapped-prediction loss against a hand value and
a numpy port of the official code, 1 vs 8 devices with multi-crop and a queue, prototype freezing,
exact checkpoint restore of prototypes and queue, and a ViT backbone with multi-crop.
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_clustering.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.methods.contrastive import swav as swav_lib
from tests import helpers
from tests.methods import _contrastive_utils as utils


# -- the method ----------------------------------------------------------------------------------
FREEZE = 2
STEPS = 3


def swav_config(**kw):
  config = helpers.tiny(utils.load_config('swav'))
  config.method.num_prototypes = 8
  config.method.proj_hidden_dim = 32
  config.method.proj_dim = 16
  config.method.num_local = 2
  config.method.local_size = 8
  config.method.local_scale = (0.1, 0.3)
  config.method.queue_length = 32       # full after two batches of 16 -> used at the third step
  config.method.queue_start_step = 0
  config.method.freeze_prototypes_steps = FREEZE
  config.optim.name = 'sgd'             # LARS' trust ratio makes the first updates tiny
  for k, v in kw.items():
    section, key = k.split('__')
    config[section][key] = v
  return config


@pytest.fixture(scope='module')
def runs():
  config = swav_config()
  protos = lambda s: s.params['prototypes']
  return utils.run(config, 1, STEPS, protos), utils.run(config, 8, STEPS, protos)


def test_multicrop_specs():
  method = swav_lib.SwAV(swav_config())
  specs = method.crop_specs()
  assert [(s.name, s.size) for s in specs] == [('view0', 16), ('view1', 16), ('view2', 8),
                                               ('view3', 8)]
  assert specs[2].scale == (0.1, 0.3)


def test_one_vs_eight_devices(runs):
  one, eight = runs
  for h1, h8 in zip(one['history'], eight['history']):
    np.testing.assert_allclose(h1['loss'], h8['loss'], rtol=1e-4)
  helpers.assert_trees_close(one['state'].params, eight['state'].params)
  helpers.assert_trees_close(one['state'].buffers, eight['state'].buffers)
  assert [h['queue_used'] for h in one['history']] == [0.0, 0.0, 1.0]


def test_prototypes_frozen_then_trained_and_normalised(runs):
  one, _ = runs
  p0 = one['init'].params['prototypes']
  np.testing.assert_allclose(np.linalg.norm(p0, axis=1), 1.0, rtol=1e-6)
  for p in one['snaps'][:FREEZE]:          # steps 0 .. FREEZE-1: no update at all
    assert np.abs(p - p0).max() <= 3e-7     # renormalising unit rows: rounding only
  moved = np.abs(one['snaps'][FREEZE] - p0).max()
  assert moved > 1e-4, moved
  np.testing.assert_allclose(np.linalg.norm(one['snaps'][FREEZE], axis=1), 1.0, rtol=1e-5)


def test_queue_holds_last_global_embeddings(runs):
  one, _ = runs
  buffers = jax.device_get(one['state'].buffers)
  assert int(buffers['queue_count']) == 32
  q = buffers['queue']
  assert q.shape == (2, 32, 16)
  np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, rtol=1e-5)  # all slots filled


def test_checkpoint_restores_prototypes_and_queue_exactly(runs):
  _, eight = runs
  utils.assert_restores_exactly(eight['exp'], eight['state'])


def test_prototype_grads_zero_before_threshold_vit():
  """Gradient w.r.t. the prototypes is exactly zero before freeze_prototypes_steps and not after;
  with a tiny ViT, which also checks multi-crop (16px and 8px crops) through one ViT."""
  from ssl_jax.train import loop  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  config = swav_config(model__backbone='vit_tiny', model__depth=1, method__queue_length=0)
  exp = loop.Experiment(config, tempfile.mkdtemp(), helpers.mesh(1))
  state = exp.initial_state()
  batch = jax.tree_util.tree_map(jnp.asarray, exp.train_ds[0])
  method = exp.method

  @jax.jit
  def proto_grad(state, step):
    state = state.replace(step=step)
    views = method.views(batch, jax.random.PRNGKey(0))
    grads, _ = jax.grad(method.loss, has_aux=True)(state.params, state, views,
                                                    jax.random.PRNGKey(1))
    return grads['prototypes'], jnp.sqrt(sum(jnp.sum(g ** 2) for g in
                                             jax.tree_util.tree_leaves(grads['backbone'])))

  g_frozen, bb_frozen = proto_grad(state, jnp.asarray(FREEZE - 1, jnp.int32))
  g_free, _ = proto_grad(state, jnp.asarray(FREEZE, jnp.int32))
  np.testing.assert_array_equal(np.asarray(g_frozen), 0.0)
  assert float(jnp.abs(g_free).max()) > 1e-6
  assert float(bb_frozen) > 0          # the rest of the network still learns


def test_freeze_until_leaves_optimizer_state_of_frozen_leaves_untouched():
  import optax  # pylint: disable=g-import-not-at-top
  params = {'prototypes': jnp.ones((2, 2)), 'w': jnp.ones((2,))}
  inner = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.5, momentum=0.9))
  tx = swav_lib.freeze_until(inner, 2, swav_lib._prototype_mask)  # pylint: disable=protected-access
  state = tx.init(params)
  grads = {'prototypes': jnp.full((2, 2), 3.0), 'w': jnp.full((2,), 3.0)}
  for step in range(3):
    updates, state = tx.update(grads, state, params)
    if step < 2:
      np.testing.assert_array_equal(np.asarray(updates['prototypes']), 0.0)
      assert float(jnp.abs(updates['w']).min()) > 0
  # At step 2 the prototypes' first real update has no momentum from the frozen steps:
  # -lr * (g + wd * p) = -0.5 * 3.1.
  np.testing.assert_allclose(np.asarray(updates['prototypes']), -0.5 * 3.1, rtol=1e-6)
