"""data2vec method: target construction vs numpy, masked-only loss, 1 vs 8 devices, checkpoint.
A tiny ViT (D=32, depth 2, 16 px = 4x4 patches).
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_distillation.py."""
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import data2vec as d2v_config

from ssl_jax.models.vit import ViT
from ssl_jax.train import loop
from ssl_jax.train.state import TrainState
from tests import helpers
from tests.methods.test_dino import STEPS, run_and_checkpoint
from tests.losses.test_distillation import np_instance_norm


def tiny_config():
  c = helpers.tiny(d2v_config.get_config('builtin'), image_size=16, batch_size=16, steps=STEPS)
  c.method.top_k = 2
  c.method.mask_ratio = 0.5
  c.method.mask_min_patches = 2
  c.method.mask_bank_size = 64
  # SGD: linear in the gradients, so 1 vs 8 devices agree to float tolerance (Adam would turn
  # the float noise of mathematically-zero gradients, e.g. the attention key bias, into
  # +-lr steps). AdamW and its schedules are tested in test_dino_ibot_data2vec.py.
  c.optim.name, c.optim.lr = 'sgd', 0.5
  return c


@pytest.fixture(scope='module')
def one_device(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('d2v'))
  exp, state, history = run_and_checkpoint(tiny_config(), workdir)
  return workdir, exp, state, history


def test_targets_and_loss_match_numpy(one_device):
  _, exp, state, _ = one_device
  method = exp.method
  st = TrainState.create(params=state.params, tx=exp.tx, buffers=state.buffers)
  views = jax.jit(method.views)(exp.train_ds[0], jax.random.PRNGKey(0))
  loss, _ = jax.jit(method.loss)(st.params, st, views, jax.random.PRNGKey(1))

  @jax.jit
  def forward(params, buffers, views):
    t = method.backbone.apply({'params': buffers['teacher']['params']['backbone']}, views['view0'],
                              return_layers=True, method=ViT.encode)
    s = method.backbone.apply({'params': params['backbone']}, views['view0'],
                              mask=views['mask'], mask_token=params['mask_token'],
                              method=ViT.encode)
    return t['layers'], s['patches']

  layers, patches = forward(st.params, st.buffers, views)
  layers = [np.asarray(l, np.float64)[:, 1:] for l in layers]   # patch tokens only
  target = (np_instance_norm(layers[-2]) + np_instance_norm(layers[-1])) / 2
  got = method.targets(st.buffers['teacher']['params']['backbone'], views['view0'])
  np.testing.assert_allclose(got, target, rtol=1e-4, atol=1e-4)
  head = st.params['regression_head']
  pred = np.asarray(patches, np.float64) @ np.asarray(head['kernel']) + np.asarray(head['bias'])
  mask = np.asarray(views['mask'])
  assert 0.3 < mask.mean() <= 0.5
  per_token = ((pred - target) ** 2).sum(-1) / np.sqrt(32)
  np.testing.assert_allclose(loss, per_token[mask].mean(), rtol=1e-4)


def test_training_runs(one_device):
  _, _, state, history = one_device
  assert all(h['nonfinite'] == 0 for h in history)
  assert all(h['target_std'] > 0.1 for h in history)
  assert history[-1]['ema_momentum'] > history[0]['ema_momentum']


def test_one_vs_eight_devices(one_device):
  _, _, state1, hist1 = one_device
  state8, hist8 = helpers.run_steps(tiny_config(), 8, STEPS)
  for h1, h8 in zip(hist1, hist8):
    np.testing.assert_allclose(h1['loss'], h8['loss'], rtol=1e-5)
  helpers.assert_trees_close(state1.buffers, state8.buffers, rtol=1e-4, atol=1e-5)
  helpers.assert_trees_close(state1.params, state8.params, rtol=1e-4, atol=1e-5)


def test_checkpoint_restores_teacher_exactly(one_device):
  workdir, _, state, _ = one_device
  exp = loop.Experiment(tiny_config(), workdir, helpers.mesh(1))
  restored, _ = exp.restore_or_init()
  exp.checkpointer.close()
  assert int(restored.step) == STEPS
  helpers.assert_trees_close(restored.buffers, state.buffers, rtol=0, atol=0)


# ----------------------------------------------------------------------------- data2vec 2.0

def tiny_v2_config():
  c = tiny_config()
  m = c.method
  m.student, m.clone_batch, m.mask_ratio = 'visible', 2, 0.75
  m.decoder_dim, m.decoder_layers, m.decoder_groups = 32, 2, 8
  m.target_final_norm, m.cls_loss = 'layer', 0.5
  return c


@pytest.fixture(scope='module')
def v2_one_device():
  return helpers.run_steps(tiny_v2_config(), 1, STEPS)


def np_gelu(x):
  from scipy.special import erf
  return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def np_conv_decoder(p, grid, n_layers, groups):
  """numpy data2vec 2.0 decoder: residual [grouped conv3x3 -> LN (no affine) -> GELU] blocks."""
  b, gh, gw, d = grid.shape
  x = grid
  for i in range(n_layers):
    k, bias = np.asarray(p[f'conv_{i}']['kernel'], np.float64), np.asarray(p[f'conv_{i}']['bias'])
    cin, cout = k.shape[2], k.shape[3]
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = np.zeros((b, gh, gw, cout))
    for g in range(groups):
      xi = pad[..., g * cin:(g + 1) * cin]
      for dy in range(3):
        for dx in range(3):
          y[..., g * (cout // groups):(g + 1) * (cout // groups)] += np.einsum(
              'bhwc,co->bhwo', xi[:, dy:dy + gh, dx:dx + gw],
              k[dy, dx, :, g * (cout // groups):(g + 1) * (cout // groups)])
    y = y + bias
    y = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-5)
    y = np_gelu(y)
    x = y + x if x.shape[-1] == cout else y
  out = x @ np.asarray(p['proj']['kernel']) + np.asarray(p['proj']['bias'])
  return out.reshape(b, gh * gw, -1)


def test_v2_loss_matches_numpy(v2_one_device):
  """data2vec 2.0: visible-only student on clone_batch masked copies, conv decoder over the grid
  with noise at masked positions, masked-mean regression + cls_loss x [CLS] -> mean target."""
  state, _ = v2_one_device
  c = tiny_v2_config()
  exp = loop.Experiment(c, tempfile.mkdtemp(), helpers.mesh(1))
  method = exp.method
  st = TrainState.create(params=state.params, tx=exp.tx, buffers=state.buffers)
  views = jax.jit(method.views)(exp.train_ds[0], jax.random.PRNGKey(0))
  b = views['view0'].shape[0]
  assert views['ids_keep'].shape == (2 * b, 4) and views['mask'].shape == (2 * b, 16)
  assert np.all(np.asarray(views['mask']).sum(1) == 12)
  rng = jax.random.PRNGKey(1)
  loss, (metrics, _) = jax.jit(method.loss)(st.params, st, views, rng)

  target = np.asarray(method.targets(st.buffers['teacher']['params']['backbone'], views['view0']),
                      np.float64)
  assert target.shape[0] == b                 # the teacher runs once per image
  target = np.repeat(target, 2, axis=0)
  enc = method.backbone.apply({'params': st.params['backbone']}, jnp.repeat(views['view0'], 2, 0),
                              ids_keep=views['ids_keep'], method=ViT.encode)
  assert enc['patches'].shape == (2 * b, 4, 32)   # the student sees the 4 visible patches only
  _, k_noise = jax.random.split(rng)
  noise = 0.01 * np.asarray(jax.random.normal(k_noise, (2 * b, 12, 32)))
  shuffled = np.concatenate([np.asarray(enc['patches'], np.float64), noise], axis=1)
  restore = np.asarray(views['ids_restore'])
  grid = np.take_along_axis(shuffled, restore[..., None], axis=1).reshape(2 * b, 4, 4, 32)
  pred = np_conv_decoder(st.params['decoder'], grid, 2, 8)
  mask = np.asarray(views['mask']).astype(bool)
  patch = (((pred - target) ** 2).sum(-1) / np.sqrt(32))[mask].mean()
  cls = (((np.asarray(enc['prefix'][:, 0], np.float64) - target.mean(1)) ** 2).sum(-1)
         / np.sqrt(32)).mean()
  np.testing.assert_allclose(metrics['patch_loss'], patch, rtol=2e-4)
  np.testing.assert_allclose(metrics['cls_loss'], 0.5 * cls, rtol=2e-4)
  np.testing.assert_allclose(loss, patch + 0.5 * cls, rtol=2e-4)


def test_v2_trains_and_agrees_on_eight_devices(v2_one_device):
  state1, hist1 = v2_one_device
  assert all(h['nonfinite'] == 0 and h['cls_loss'] > 0 for h in hist1)
  assert 'mask_token' not in state1.params and 'decoder' in state1.params
  state8, hist8 = helpers.run_steps(tiny_v2_config(), 8, STEPS)
  for h1, h8 in zip(hist1, hist8):
    np.testing.assert_allclose(h1['loss'], h8['loss'], rtol=1e-5)
  helpers.assert_trees_close(state1.params, state8.params, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('field,value,match', [
    ('student', 'pixels', 'config.method.student'),
    ('mask_ratio', 0.99, 'config.method.mask_ratio'),
    ('clone_batch', 0, 'config.method.clone_batch'),
    ('decoder_groups', 5, 'config.method.decoder_groups'),
])
def test_v2_bad_config_errors(field, value, match):
  from ssl_jax.methods.distillation.data2vec import Data2Vec
  c = tiny_v2_config()
  c.method[field] = value
  with pytest.raises(ValueError, match=match):
    Data2Vec(c)


def test_imagenet_v2_config_builds_the_paper_model():
  """configs/data2vec.py:imagenet_v2 is data2vec 2.0 base: ViT-B/16, 16 clones, 80 % masked
  (39 of 196 patches visible), top-12 targets, 768-d decoder."""
  from ssl_jax import config as config_lib
  from ssl_jax.data import masking
  from ssl_jax.methods.distillation.data2vec import Data2Vec
  c = d2v_config.get_config('imagenet_v2')
  config_lib.validate(c)
  method = Data2Vec(c)
  assert method.student == 'visible' and method.clone_batch == 16
  assert method.num_patches == 196 and masking.num_kept(196, c.method.mask_ratio) == 39
  assert c.method.top_k == method.backbone.depth == 12
  assert method.decoder.dim == method.backbone.embed_dim == 768
