"""CPC v2: the InfoNCE over patch latents against hand values and numpy; the context network is
causal (no gradient from rows below); patch extraction; config checks; two real train steps.
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_contrastive.py."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.methods import build_method
from ssl_jax.methods.contrastive import cpc
from tests import helpers
from tests.methods import _contrastive_utils as utils


def _row_gradients(apply_fn, z):
  """(H, H) matrix: entry (i, r) sums |d out[:, i] / d z[:, r]| over everything else."""
  jac = jax.jit(jax.jacrev(apply_fn))(z)                  # out.shape + z.shape
  jac = np.abs(np.asarray(jac))
  h, out_ndim = z.shape[1], jac.ndim - z.ndim
  jac = np.moveaxis(jac, (1, out_ndim + 1), (0, 1)).reshape(h, h, -1)
  return jac.sum(-1)


def test_context_network_is_causal():
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5, 8))
  net = cpc.CPCContext(num_blocks=3, hidden_dim=16)
  params = net.init(jax.random.PRNGKey(1), z)
  grads = _row_gradients(lambda x: net.apply(params, x), z)
  below = np.triu(np.ones((6, 6), bool), k=1)          # (i, r) with r > i
  assert (grads[below] == 0).all(), grads                # exactly zero, not just small
  assert (np.diag(grads) > 0).all()                      # sees its own row
  assert (np.diag(grads, k=-3) > 0).all()                # 3 blocks reach 3 rows up
  # The check is not vacuous: a plain 3x3 SAME conv (no mask) sees the row below.
  conv = nn.Conv(8, (3, 3))
  cparams = conv.init(jax.random.PRNGKey(2), z)
  assert (_row_gradients(lambda x: conv.apply(cparams, x), z)[below] > 0).any()


def test_predictions_depend_on_rows_above_only():
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 8))
  head = cpc.CPCHead(steps=(1, 2), num_blocks=2, hidden_dim=16, target_dim=4, emb_scale=0.1)
  params = head.init(jax.random.PRNGKey(1), z)
  for s in range(2):
    grads = _row_gradients(lambda x, s=s: head.apply(params, x)[0][s], z)
    assert (grads[np.triu(np.ones((5, 5), bool), k=1)] == 0).all()


def test_extract_patches_shapes_and_values():
  images = jnp.arange(2 * 16 * 16 * 3, dtype=jnp.float32).reshape(2, 16, 16, 3)
  patches = cpc.extract_patches(images, 8, 4)
  assert patches.shape == (2, 3, 3, 8, 8, 3)
  for i in range(3):
    for j in range(3):
      np.testing.assert_array_equal(np.asarray(patches[:, i, j]),
                                    np.asarray(images[:, 4 * i:4 * i + 8, 4 * j:4 * j + 8]))
  assert cpc.grid_size(256, 64, 32) == 7
  assert cpc.grid_size(24, 8, 4) == 5
  with pytest.raises(ValueError, match='patch_stride=5'):
    cpc.grid_size(16, 8, 5)
  with pytest.raises(ValueError, match='patch_size=32'):
    cpc.grid_size(16, 32, 4)


def test_augment_patches_flip_and_colour_drop():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3, 4, 4, 3))
  flipped = cpc.augment_patches(jax.random.PRNGKey(1), x, flip=1.0, color_drop=0.0)
  np.testing.assert_array_equal(np.asarray(flipped), np.asarray(x[:, :, :, :, ::-1]))
  dropped = np.asarray(cpc.augment_patches(jax.random.PRNGKey(1), x, flip=0.0, color_drop=1.0))
  kept = (np.abs(dropped) > 0).any(axis=(3, 4))          # (2, 3, 3, C): channels left per patch
  assert (kept.sum(-1) == 1).all()
  assert len(np.unique(kept.argmax(-1))) > 1             # the kept channel varies per patch


def test_config_checks_name_the_field():
  with pytest.raises(ValueError, match="use 'builtin', 'cifar10' or 'imagenet'"):
    utils.load_config('cpc', 'nope')
  for variant in ('cifar10', 'imagenet'):
    c = utils.load_config('cpc', variant)
    assert cpc.grid_size(c.data.image_size, c.method.patch_size, c.method.patch_stride) == 7
  c = helpers.tiny(utils.load_config('cpc'))
  c.method.patch_stride = 3
  with pytest.raises(ValueError, match='config.method.patch_stride=3'):
    build_method(c)
  c = helpers.tiny(utils.load_config('cpc'))
  c.method.max_step = 3                                   # 16 px / 8 / 4: a 3-row grid
  with pytest.raises(ValueError, match='config.method.max_step=3'):
    build_method(c)


@pytest.fixture(scope='module')
def run():
  config = helpers.tiny(utils.load_config('cpc'))      # 16 px crops: a 3x3 grid of 8 px patches
  config.method.context_dim = 16
  config.method.target_dim = 8
  config.method.context_blocks = 1
  return utils.run(config, 1, 2)


def test_two_train_steps_finite_loss(run):
  hist = run['history']
  assert len(hist) == 2
  for h in hist:
    assert math.isfinite(h['loss'])
    # 16 images x 9 patches = 144 candidates: the untrained loss is near log(144).
    assert abs(h['loss'] - math.log(144)) < 1.0
    assert 0.0 <= h['cpc_acc'] <= 1.0
  assert int(run['state'].skipped) == 0


def test_features_are_pooled_patch_encodings(run):
  exp, state = run['exp'], run['state']
  method = exp.method
  images = jnp.asarray(exp.train_ds[0]['view0'][:4])
  features = lambda: jax.jit(method.features)(state.params, state.buffers, images)
  f = features()
  assert f.shape == (4, method.feature_dim)
  assert np.isfinite(np.asarray(f)).all()
  method.eval_features = 'image'
  try:
    g = features()
  finally:
    method.eval_features = 'patches'
  assert g.shape == f.shape and not np.allclose(np.asarray(f), np.asarray(g))
  v = method.encoder_variables(state.params, state.buffers)
  assert set(v) == {'params', 'batch_stats'}
