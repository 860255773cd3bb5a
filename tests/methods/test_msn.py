"""MSN / PMSN method: masked anchors (kept-patch counts, the loss of a real step against the
official formula on hand-recomputed embeddings), the EMA target, evaluation on the target, the
PMSN prior, and the 1-vs-8-device equality of the first steps. A tiny ViT (D=32, depth 1, 16 px
target / anchor, two 8 px focal crops), BatchNorm in the projector."""
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import msn as msn_config
from ssl_jax import losses
from ssl_jax.methods import build_method
from ssl_jax.train import loop, sharding
from ssl_jax.train.state import TrainState
from tests import helpers
from tests.losses.test_msn import msn_numpy

STEPS = 2


def tiny_config(variant='builtin'):
  c = helpers.tiny(msn_config.get_config(variant), image_size=16, batch_size=16, steps=STEPS)
  c.model.depth = 1
  m = c.method
  m.num_prototypes, m.proj_hidden_dim, m.proj_dim = 32, 32, 16
  m.num_focal_crops, m.focal_crop_size = 2, 8
  m.mask_ratio = 0.3
  m.momentum = 0.9
  # SGD: linear in the gradients, so 1 vs 8 devices agree to float tolerance.
  c.optim.name, c.optim.lr = 'sgd', 0.5
  return c


@pytest.fixture(scope='module')
def one_device():
  exp = loop.Experiment(tiny_config(), tempfile.mkdtemp(), helpers.mesh(1))
  state = exp.initial_state()
  init = jax.device_get(state)
  history = []
  for i in range(STEPS):
    state, metrics = exp.step_fn(state, sharding.global_batch(exp.mesh, exp.train_ds[i]))
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return exp, init, jax.device_get(state), history


def test_loss_is_the_official_formula_on_masked_anchors(one_device):
  """Anchors = the student ViT on the kept patches only (int(16 * 0.7) = 11 of the anchor's
  4x4 grid, int(4 * 0.7) = 2 of each focal crop's 2x2), [CLS] -> projector (BatchNorm over all
  anchors); target = the EMA encoder on the unmasked target crop; loss = official MSN loss."""
  exp, _, _, _ = one_device
  method = exp.method
  st = exp.initial_state()   # on device, not a host copy of buffers the steps donated
  views = jax.jit(method.views)(exp.train_ds[0], jax.random.PRNGKey(0))
  assert views['anchor_keep'].shape == (16, 11) and views['focal_keep'].shape == (32, 2)
  loss, (metrics, _) = jax.jit(method.loss)(st.params, st, views, jax.random.PRNGKey(1))

  @jax.jit
  def embeddings(params, buffers):
    enc = lambda p, x, keep: method.backbone.apply(
        {'params': p}, x, ids_keep=keep, method=type(method.backbone).encode)['tokens'][:, 0]
    focal = jnp.concatenate([views['focal0'], views['focal1']])
    feats = jnp.concatenate([enc(params['backbone'], views['anchor'], views['anchor_keep']),
                             enc(params['backbone'], focal, views['focal_keep'])])
    stats = buffers['batch_stats']
    a, _ = method.head.apply({'params': params['head'], 'batch_stats': stats['head']}, feats,
                             train=True, mutable=['batch_stats'])
    h = method.backbone.apply({'params': buffers['teacher']['params']['backbone']},
                              views['target'])
    t, _ = method.head.apply({'params': buffers['teacher']['params']['head'],
                              'batch_stats': buffers['teacher']['batch_stats']['head']}, h,
                             train=True, mutable=['batch_stats'])
    return a, t

  a, t = embeddings(st.params, st.buffers)
  want = msn_numpy(a, t, st.params['prototypes'], sinkhorn=True)
  np.testing.assert_allclose(loss, want, rtol=1e-4)
  # Unmasked anchors would give another loss: the masking is really applied.
  full = method.backbone.apply({'params': st.params['backbone']}, views['anchor'])
  kept = method.backbone.apply({'params': st.params['backbone']}, views['anchor'],
                               ids_keep=views['anchor_keep'],
                               method=type(method.backbone).encode)['tokens'][:, 0]
  assert float(jnp.abs(full - kept).max()) > 1e-4
  assert 1 <= metrics['prototypes_used'] <= 32


def test_after_update_is_ema_and_features_use_the_target(one_device):
  exp, _, state, history = one_device
  method = exp.method
  assert all(h['nonfinite'] == 0 and np.isfinite(h['loss']) for h in history)
  st = TrainState.create(params=state.params, tx=exp.tx, buffers=state.buffers)
  zero = jax.tree_util.tree_map(jnp.zeros_like, st.buffers['teacher'])
  st = st.replace(step=jnp.asarray(1, jnp.int32), buffers=dict(st.buffers, teacher=zero))
  out = method.after_update(st)   # update number 0: momentum 0.9
  helpers.assert_trees_close(out.buffers['teacher']['params'], jax.tree_util.tree_map(
      lambda p: 0.1 * p, {k: st.params[k] for k in ('backbone', 'head')}), rtol=1e-5, atol=1e-7)
  images = jnp.asarray(exp.train_ds[0]['anchor'][:4])
  f = method.features(state.params, state.buffers, images)
  x = method.normalize(images)
  teacher = method.backbone.apply({'params': state.buffers['teacher']['params']['backbone']}, x)
  student = method.backbone.apply({'params': state.params['backbone']}, x)
  np.testing.assert_allclose(f, teacher, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(f - student).max()) > 1e-6


def test_pmsn_variant_uses_the_power_law_prior():
  method = build_method(tiny_config('pmsn_builtin'))
  np.testing.assert_allclose(method.prior, losses.power_law_prior(32, 0.25), rtol=1e-6)
  assert build_method(tiny_config()).prior is None
  c = tiny_config()
  c.method.prior = 'powerlaw'
  with pytest.raises(ValueError, match='prior'):
    build_method(c)


def test_one_vs_eight_devices(one_device):
  _, _, state1, hist1 = one_device
  state8, hist8 = helpers.run_steps(tiny_config(), 8, STEPS)
  for h1, h8 in zip(hist1, hist8):
    for key in ('loss', 'regularizer', 'cross_entropy'):
      np.testing.assert_allclose(h8[key], h1[key], rtol=1e-5, err_msg=key)
  helpers.assert_trees_close(state8.params, state1.params, rtol=1e-4, atol=1e-5)
  helpers.assert_trees_close(state8.buffers, state1.buffers, rtol=1e-4, atol=1e-5)
