"""iBOT method: losses inside the method vs numpy, masks, 1 vs 8 devices, checkpoint restore.
A tiny ViT (D=32, depth 2, 16 px globals = 4x4 patches, 8 px locals)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ibot as ibot_config
from ssl_jax.models.vit import ViT
from ssl_jax.train import loop
from ssl_jax.train.state import TrainState
from tests import helpers
from tests.methods.test_dino import STEPS, run_and_checkpoint
from tests.losses.test_distillation import np_center, np_dino_loss, np_ibot_patch_loss


def tiny_config(shared_head=True):
  c = helpers.tiny(ibot_config.get_config('builtin'), image_size=16, batch_size=16, steps=STEPS)
  m = c.method
  m.local_crop_size, m.num_local_crops = 8, 2
  m.out_dim, m.hidden_dim, m.bottleneck_dim = 64, 32, 16
  m.use_bn_in_head = False   # the hand computations use the plain head
  m.shared_head = shared_head
  m.patch_out_dim = 64 if shared_head else 48
  m.freeze_last_layer_steps = 1
  m.mask_bank_size = 64
  m.mask_prob = 0.75
  m.mask_ratio_range = (0.2, 0.5)
  m.mask_min_patches = 2
  m.teacher_patch_temp, m.warmup_teacher_patch_temp = 0.05, 0.05
  # SGD: linear in the gradients, so 1 vs 8 devices agree to float tolerance (Adam would turn
  # the float noise of mathematically-zero gradients, e.g. the attention key bias, into
  # +-lr steps). AdamW and its schedules are tested in test_dino_ibot_data2vec.py.
  c.optim.name, c.optim.lr = 'sgd', 0.5
  return c


@pytest.fixture(scope='module')
def one_device(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('ibot'))
  exp, state, history = run_and_checkpoint(tiny_config(), workdir)
  return workdir, exp, state, history


def test_losses_inside_the_method_match_numpy(one_device):
  """[CLS] loss (all pairs but same view, old center) and patch loss (masked positions, old
  patch center) of one IBOT.loss call vs the numpy references; centers updated after."""
  _, exp, state, _ = one_device
  method = exp.method
  st = TrainState.create(params=state.params, tx=exp.tx, buffers=state.buffers)
  views = jax.jit(method.views)(exp.train_ds[0], jax.random.PRNGKey(0))
  loss, (metrics, new_buffers) = jax.jit(method.loss)(st.params, st, views, jax.random.PRNGKey(1))

  @jax.jit
  def logits(params, buffers, views):
    b = views['global0'].shape[0]
    g = jnp.concatenate([views['global0'], views['global1']])
    enc = method.backbone.apply({'params': params['backbone']}, g, mask=views['masks'].reshape(
        2 * b, -1), mask_token=params['mask_token'], method=ViT.encode)
    s_tok = method.head.apply({'params': params['head']}, enc['tokens'])
    loc = [method.backbone.apply({'params': params['backbone']}, views[f'local{i}'])
           for i in range(2)]
    s_loc = method.head.apply({'params': params['head']}, jnp.concatenate(loc))
    t_enc = method.backbone.apply({'params': buffers['teacher']['params']['backbone']}, g,
                                  method=ViT.encode)
    t_tok = method.head.apply({'params': buffers['teacher']['params']['head']}, t_enc['tokens'])
    s_cls = jnp.concatenate([s_tok[:, 0], s_loc]).reshape(4, b, -1)
    return (s_cls, s_tok[:, 1:].reshape(2, b, 16, -1), t_tok[:, 0].reshape(2, b, -1),
            t_tok[:, 1:].reshape(2, b, 16, -1))

  s_cls, s_patch, t_cls, t_patch = (np.asarray(a, np.float64)
                                    for a in logits(st.params, st.buffers, views))
  masks = np.asarray(views['masks'])
  assert masks.shape == (2, 16, 16) and 0 < masks.mean() < 0.5
  c, pc = (np.asarray(st.buffers[k], np.float64) for k in ('center', 'patch_center'))
  cls_ref = np_dino_loss(s_cls, t_cls, c, 0.1, 0.04)
  patch_ref = np_ibot_patch_loss(s_patch, t_patch, masks, pc[0], 0.1, 0.05)
  np.testing.assert_allclose(metrics['cls_loss'], cls_ref, rtol=1e-4)
  np.testing.assert_allclose(metrics['patch_loss'], patch_ref, rtol=1e-4)
  lam1, lam2 = method.config.method.lambda1, method.config.method.lambda2
  assert (lam1, lam2) == (1.0, 0.5)   # the builtin's weights: both terms must enter as weighted
  np.testing.assert_allclose(loss, lam1 * cls_ref + lam2 * patch_ref, rtol=1e-4)
  np.testing.assert_allclose(new_buffers['center'], np_center(c, t_cls, 0.9), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(new_buffers['patch_center'], np_center(pc, t_patch, 0.9),
                             rtol=1e-4, atol=1e-6)


def test_training_runs_and_moves_state(one_device):
  _, _, state, history = one_device
  assert all(h['nonfinite'] == 0 for h in history)
  assert all(h['patch_loss'] > 0 and 0 < h['mask_ratio'] < 0.5 for h in history)
  assert float(np.abs(state.buffers['patch_center']).max()) > 0
  assert float(np.abs(state.params['mask_token']).max()) > 0   # the mask token learns


def test_one_vs_eight_devices(one_device):
  _, _, state1, hist1 = one_device
  state8, hist8 = helpers.run_steps(tiny_config(), 8, STEPS)
  for h1, h8 in zip(hist1, hist8):
    np.testing.assert_allclose([h1['cls_loss'], h1['patch_loss']],
                               [h8['cls_loss'], h8['patch_loss']], rtol=1e-5)
  helpers.assert_trees_close(state1.buffers, state8.buffers, rtol=1e-4, atol=1e-5)
  helpers.assert_trees_close(state1.params, state8.params, rtol=1e-4, atol=1e-5)


def test_checkpoint_restores_teacher_and_centers_exactly(one_device):
  workdir, _, state, _ = one_device
  exp = loop.Experiment(tiny_config(), workdir, helpers.mesh(1))
  restored, _ = exp.restore_or_init()
  exp.checkpointer.close()
  assert int(restored.step) == STEPS
  helpers.assert_trees_close(restored.buffers, state.buffers, rtol=0, atol=0)
  helpers.assert_trees_close(restored.params, state.params, rtol=0, atol=0)
