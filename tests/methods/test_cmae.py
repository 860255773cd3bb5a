"""CMAE: the loss against a numpy version of the paper's formula, reconstruction on masked patches
only, pixel-shifted views, grouped masking, no gradient into the EMA target, the EMA itself, and
real train steps on 1 vs 8 simulated devices.
The loss functions' own tests (hand values, numpy references) are in tests/losses/test_hybrid.py."""
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.data import augment
from ssl_jax.methods import build_method
from ssl_jax.methods.hybrid import cmae as cmae_lib
from tests import helpers
from tests.methods import _contrastive_utils as utils

STEPS = 3


def tiny_config(**overrides):
  """16 px, 4 px patches (4x4 grid), D=32, depth 2; every head and decoder a few units wide."""
  c = helpers.tiny(utils.load_config('cmae'), steps=STEPS)
  m = c.method
  m.decoder_dim, m.decoder_depth, m.decoder_heads = 16, 1, 2
  m.feature_decoder_dim, m.feature_decoder_depth, m.feature_decoder_heads = 16, 1, 2
  m.proj_hidden_dim, m.proj_dim, m.pred_hidden_dim, m.pred_dim = 32, 16, 32, 16
  m.mask_unit = 2            # the official 2x2-group masking: 1 of the 4 groups stays visible
  m.update(overrides)
  return c


# ----------------------------------------------------------------------------- views and masks

def test_grouped_masking_keeps_whole_groups():
  out = cmae_lib.grouped_random_masking(jax.random.PRNGKey(0), 32, (14, 14), 2, 0.65)
  mask = np.asarray(out['mask'])
  np.testing.assert_array_equal(mask.sum(1), 196 - 4 * 17)   # 17 of 49 groups kept (official)
  groups = mask.reshape(32, 7, 2, 7, 2)
  assert np.all(groups.min(axis=(2, 4)) == groups.max(axis=(2, 4)))
  for keep, m in zip(np.asarray(out['ids_keep']), mask):
    np.testing.assert_array_equal(np.sort(keep), np.flatnonzero(m == 0))
  restore = np.asarray(out['ids_restore'])
  assert np.all(np.sort(restore, axis=1) == np.arange(196))


def test_views_are_pixel_shifted_windows_of_one_canvas():
  c = tiny_config()
  c.aug.recipe = ('none', 'none')   # no colour op on the target: its pixels are comparable
  method = build_method(c)
  assert method.crop_specs()[0].size == 16 + 3
  canvas = np.random.default_rng(2).integers(0, 256, (64, 19, 19, 3), dtype=np.uint8)
  v = jax.jit(method.views)({'view0': jnp.asarray(canvas)}, jax.random.PRNGKey(4))
  norm = lambda x: augment.normalize(jnp.asarray(x, jnp.float32) / 255.0, augment.IMAGENET_MEAN,
                                     augment.IMAGENET_STD)
  np.testing.assert_allclose(v['image'], norm(canvas[:, :16, :16]), atol=1e-6)
  shift = np.asarray(v['shift'])
  assert shift.min() == 0 and shift.max() == 3 and len({tuple(s) for s in shift}) > 8
  windows = np.stack([canvas[i, dy:dy + 16, dx:dx + 16] for i, (dy, dx) in enumerate(shift)])
  np.testing.assert_allclose(v['target_image'], norm(windows), atol=1e-6)
  assert v['mask'].shape == (64, 16) and np.all(np.asarray(v['mask']).sum(1) == 12)


# ----------------------------------------------------------------------------- gradients

def test_ema_target_gets_no_gradient_online_heads_do():
  c = tiny_config()
  method = build_method(c)
  canvas = jnp.asarray(np.random.default_rng(3).integers(0, 256, (16, 19, 19, 3), np.uint8))
  params, buffers = method.init(jax.random.PRNGKey(0), {'view0': canvas})
  views = method.views({'view0': canvas}, jax.random.PRNGKey(1))

  def loss(params, target):
    state = types.SimpleNamespace(buffers=dict(buffers, teacher=target))
    return method.loss(params, state, views, jax.random.PRNGKey(2))[0]

  g_params, g_target = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, buffers['teacher'])
  assert all(not np.any(np.asarray(x)) for x in jax.tree_util.tree_leaves(g_target))
  for name in ('backbone', 'decoder', 'feature_decoder', 'projector', 'predictor'):
    assert any(np.any(np.asarray(x)) for x in jax.tree_util.tree_leaves(g_params[name])), name


# ----------------------------------------------------------------------------- train steps

@pytest.fixture(scope='module')
def runs():
  c = tiny_config()
  # SGD instead of AdamW for the parity runs: some parameters have an exactly zero true gradient
  # (attention key biases: softmax is shift invariant), and Adam's normalisation turns their
  # float32 rounding noise into +-lr steps whose sign depends on the reduction order, i.e. on the
  # device count (MoCo v3's test switches to LARS for the same reason).
  c.optim.name, c.optim.lr = 'sgd', 0.5
  snapshot = lambda s: {'params': s.params, 'target': s.buffers['teacher']['params']}
  eight = utils.run(c, 8, STEPS, snapshot=snapshot)
  state1, history1 = helpers.run_steps(c, 1, STEPS)
  return dict(config=c, eight=eight, state1=state1, history1=history1)


def test_train_steps_log_both_terms(runs):
  for h in runs['eight']['history']:
    np.testing.assert_allclose(h['loss'], h['loss_recon'] + h['loss_contrastive'], rtol=1e-5)
    assert np.isfinite(h['loss']) and h['nonfinite'] == 0 and h['loss_contrastive'] > 0
    assert 0 <= h['contrastive_acc'] <= 1
  hist = runs['eight']['history']
  assert hist[-1]['loss'] != hist[0]['loss']
  method = runs['eight']['exp'].method
  feats = method.features(runs['state1'].params, {}, np.zeros((4, 16, 16, 3), np.uint8))
  assert feats.shape == (4, 32)


def test_one_vs_eight_devices(runs):
  hist8, hist1 = runs['eight']['history'], runs['history1']
  for key in ('loss', 'loss_recon', 'loss_contrastive'):
    np.testing.assert_allclose([h[key] for h in hist1], [h[key] for h in hist8], rtol=1e-4,
                               err_msg=key)
  # Same parameters up to the reduction order of the 8-device sums; per-device negatives or
  # per-device BatchNorm statistics would move them far more.
  state8, init = runs['eight']['state'], runs['eight']['init']
  helpers.assert_trees_close(runs['state1'].params, state8.params, rtol=2e-4, atol=2e-5)
  helpers.assert_trees_close(runs['state1'].buffers, state8.buffers, rtol=2e-4, atol=2e-5)
  moved = jax.tree_util.tree_map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(),
                                 state8.params, init.params)
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-3


def test_momentum_encoder_is_ema_of_online(runs):
  eight = runs['eight']
  init = eight['init']
  before = [{'target': init.buffers['teacher']['params']}] + eight['snaps'][:-1]
  for t, (prev, now) in enumerate(zip(before, eight['snaps'])):
    m = 1 - (1 - 0.99) * (math.cos(math.pi * t / STEPS) + 1) / 2   # cosine 0.99 -> 1, m(t)
    online = {k: now['params'][k] for k in ('backbone', 'projector')}
    expected = jax.tree_util.tree_map(lambda a, b: m * a + (1 - m) * b, prev['target'], online)
    helpers.assert_trees_close(now['target'], expected, rtol=1e-5, atol=1e-7)
  # The target started as the online network and, with m < 1, moved.
  helpers.assert_trees_close(init.buffers['teacher']['params']['backbone'],
                             init.params['backbone'], rtol=0, atol=0)
  assert not np.allclose(eight['snaps'][-1]['target']['projector']['fc0']['kernel'],
                         init.params['projector']['fc0']['kernel'])
