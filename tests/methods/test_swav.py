"""SwAV: Sinkhorn-Knopp marginals and values, the swapped-prediction loss against a hand value and
a numpy port of the official code, 1 vs 8 devices with multi-crop and a queue, prototype freezing,
exact checkpoint restore of prototypes and queue, and a ViT backbone with multi-crop."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses
from ssl_jax.methods.contrastive import swav as swav_lib
from tests import helpers
from tests.methods import _contrastive_utils as utils


# -- numpy reference (facebookresearch/swav main_swav.py, single process) ------------------------
def sinkhorn_numpy(out, epsilon=0.05, iters=3):
  q = np.exp(np.asarray(out, np.float64) / epsilon).T
  b, k = q.shape[1], q.shape[0]
  q /= q.sum()
  for _ in range(iters):
    q /= q.sum(axis=1, keepdims=True)
    q /= k
    q /= q.sum(axis=0, keepdims=True)
    q /= b
  return (q * b).T


def swav_numpy(scores, assign=(0, 1), temperature=0.1, epsilon=0.05, iters=3, queue=None):
  bs, n_crops, loss = scores[0].shape[0], len(scores), 0.0
  for i, s in enumerate(assign):
    out = np.asarray(scores[s], np.float64)
    if queue is not None:
      out = np.concatenate([queue[i], out])
    q = sinkhorn_numpy(out, epsilon, iters)[-bs:]
    sub = 0.0
    for v in np.delete(np.arange(n_crops), s):
      x = np.asarray(scores[v], np.float64) / temperature
      log_p = x - x.max(1, keepdims=True)
      log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
      sub -= np.mean(np.sum(q * log_p, axis=1))
    loss += sub / (n_crops - 1)
  return loss / len(assign)


# -- Sinkhorn ------------------------------------------------------------------------------------
def test_sinkhorn_hand_values():
  # exp(scores / eps) = [[3, 1], [1, 1]]; one iteration by hand: Q = [[.3, 1/6], [.2, 1/3]] (K x B)
  # -> codes B Q^T = [[.6, .4], [1/3, 2/3]].
  m = np.array([[3., 1.], [1., 1.]])
  codes = losses.sinkhorn_knopp(jnp.asarray(0.05 * np.log(m), jnp.float32), 0.05, iterations=1)
  np.testing.assert_allclose(np.asarray(codes), [[0.6, 0.4], [1 / 3, 2 / 3]], rtol=1e-5)
  # A doubly stochastic kernel is a fixed point: codes = M / 3.
  m = np.array([[2., 1.], [1., 2.]])
  codes = losses.sinkhorn_knopp(jnp.asarray(0.05 * np.log(m), jnp.float32), 0.05, iterations=3)
  np.testing.assert_allclose(np.asarray(codes), m / 3, rtol=1e-5)


def test_sinkhorn_marginals():
  rng = np.random.default_rng(0)
  b, k = 32, 8
  z = rng.normal(size=(b, 16))
  c = rng.normal(size=(k, 16))
  scores = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (c / np.linalg.norm(c, axis=1,
                                                                                keepdims=True)).T
  scores = jnp.asarray(scores, jnp.float32)
  for iters in (3, 100):
    q = np.asarray(losses.sinkhorn_knopp(scores, 0.05, iters), np.float64)
    # The last step normalises samples: every code is a distribution over the K prototypes.
    np.testing.assert_allclose(q.sum(1), np.ones(b), rtol=1e-5)
    assert (q >= 0).all()
  # Equal partition: each prototype gets B/K of the mass (exactly in the limit).
  np.testing.assert_allclose(q.sum(0), np.full(k, b / k), rtol=1e-3)
  # After 3 iterations (the paper's setting) the prototype marginals are already much closer to
  # B/K than the plain softmax assignment's.
  q3 = np.asarray(losses.sinkhorn_knopp(scores, 0.05, 3))
  soft = np.asarray(jax.nn.softmax(scores / 0.05, axis=1))
  assert np.abs(q3.sum(0) - b / k).sum() < 0.5 * np.abs(soft.sum(0) - b / k).sum()
  np.testing.assert_allclose(q3, sinkhorn_numpy(scores, 0.05, 3), rtol=1e-4, atol=1e-6)


def test_sinkhorn_valid_mask_equals_dropping_columns():
  rng = np.random.default_rng(1)
  scores = jnp.asarray(rng.uniform(-1, 1, size=(12, 5)), jnp.float32)
  valid = jnp.asarray([False] * 4 + [True] * 8)
  masked = losses.sinkhorn_knopp(scores, 0.05, 3, valid)
  np.testing.assert_allclose(np.asarray(masked[4:]), sinkhorn_numpy(scores[4:]), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_array_equal(np.asarray(masked[:4]), 0.0)


# -- loss ----------------------------------------------------------------------------------------
def test_swav_hand_value():
  # B = 1: the codes are uniform (1/2, 1/2) whatever the scores. Crop 1 (scores 0, 0) predicts
  # crop 0's code: log 2; crop 0 (logits 1, 0) predicts crop 1's: log(1 + e) - 1/2.
  s0 = jnp.array([[0.1, 0.0]])
  s1 = jnp.array([[0.0, 0.0]])
  loss, _ = losses.swav([s0, s1], (0, 1), temperature=0.1)
  np.testing.assert_allclose(float(loss), (math.log(2) + math.log(1 + math.e) - 0.5) / 2,
                             rtol=1e-6)


def test_swav_matches_numpy_multicrop_and_queue():
  rng = np.random.default_rng(2)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  protos = unit(rng.normal(size=(6, 8)))
  scores = [unit(rng.normal(size=(10, 8))) @ protos.T for _ in range(5)]   # 2 global + 3 local
  queue = [unit(rng.normal(size=(20, 8))) @ protos.T for _ in range(2)]
  js = [jnp.asarray(s, jnp.float32) for s in scores]
  loss, _ = losses.swav(js, (0, 1), 0.1, 0.05, 3)
  np.testing.assert_allclose(float(loss), swav_numpy(scores), rtol=1e-5)
  jq = [jnp.asarray(q, jnp.float32) for q in queue]
  loss_q, _ = losses.swav(js, (0, 1), 0.1, 0.05, 3, jq, jnp.asarray(True))
  np.testing.assert_allclose(float(loss_q), swav_numpy(scores, queue=queue), rtol=1e-5)
  assert abs(float(loss_q) - float(loss)) > 1e-4
  loss_off, _ = losses.swav(js, (0, 1), 0.1, 0.05, 3, jq, jnp.asarray(False))
  np.testing.assert_allclose(float(loss_off), float(loss), rtol=1e-6)


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
