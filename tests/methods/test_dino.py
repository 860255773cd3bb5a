"""DINO method: center order inside the method, EMA teacher, 1 vs 8 devices, checkpoint restore,
attention maps. A tiny ViT (D=32, depth 2, 16 px globals, 8 px locals)."""
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dino as dino_config
from ssl_jax.data import pipeline
from ssl_jax.train import loop, sharding
from ssl_jax.train.state import TrainState
from ssl_jax.viz import attention
from tests import helpers
from tests.losses.test_distillation import np_center, np_dino_loss

STEPS = 3


def tiny_config():
  c = helpers.tiny(dino_config.get_config('builtin'), image_size=16, batch_size=16, steps=STEPS)
  m = c.method
  m.local_crop_size, m.num_local_crops = 8, 2
  m.out_dim, m.hidden_dim, m.bottleneck_dim = 64, 32, 16
  m.use_bn_in_head = False   # the hand computations use the plain head
  m.freeze_last_layer_steps = 1
  m.warmup_teacher_temp, m.teacher_temp, m.warmup_teacher_temp_steps = 0.04, 0.07, 4
  # SGD: linear in the gradients, so 1 vs 8 devices agree to float tolerance (Adam would turn
  # the float noise of mathematically-zero gradients, e.g. the attention key bias, into
  # +-lr steps). AdamW and its schedules are tested in test_dino_ibot_data2vec.py.
  c.optim.name, c.optim.lr = 'sgd', 0.5
  return c


def run_and_checkpoint(config, workdir, n_devices=1):
  """STEPS real steps on ``n_devices`` through loop.Experiment, then a forced checkpoint."""
  exp = loop.Experiment(config, workdir, helpers.mesh(n_devices))
  state, _ = exp.restore_or_init()
  history = []
  for i in range(STEPS):
    state, metrics = exp.step_fn(state, sharding.global_batch(exp.mesh, exp.train_ds[i]))
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  exp.save(state, pipeline.make_iterator(exp.train_ds, 0, 1), force=True)
  exp.checkpointer.wait()
  exp.checkpointer.close()
  return exp, jax.device_get(state), history


@pytest.fixture(scope='module')
def one_device(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('dino'))
  exp, state, history = run_and_checkpoint(tiny_config(), workdir)
  return workdir, exp, state, history


def test_loss_uses_old_center_then_updates_it(one_device):
  """Two consecutive calls of DINO.loss: each loss equals the official double loop with the
  center *before* the call, and the returned center is 0.9 c + 0.1 mean(teacher logits)."""
  _, exp, state, _ = one_device
  method = exp.method
  batch0, batch1 = exp.train_ds[0], exp.train_ds[1]
  st = TrainState.create(params=state.params, tx=exp.tx, buffers=state.buffers)
  loss_fn = jax.jit(method.loss)
  views_fn = jax.jit(method.views)

  @jax.jit
  def logits(params, buffers, views):
    b = views['global0'].shape[0]
    crops = [views['global0'], views['global1'], views['local0'], views['local1']]
    feats = [method.backbone.apply({'params': params['backbone']}, x) for x in crops]
    s = method.head.apply({'params': params['head']}, jnp.stack(feats).reshape(4 * b, -1))
    t_feats = [method.backbone.apply({'params': buffers['teacher']['params']['backbone']}, x)
               for x in crops[:2]]
    t = method.head.apply({'params': buffers['teacher']['params']['head']},
                          jnp.stack(t_feats).reshape(2 * b, -1))
    return s.reshape(4, b, -1), t.reshape(2, b, -1)

  # The center the test starts from: the teacher outputs' batch mean plus noise of the size of
  # the teacher temperature, so the sharpened teacher distribution depends visibly on the center
  # (a center far from the outputs, or a constant one, leaves the softmax unchanged).
  _, t0 = logits(st.params, st.buffers, views_fn(batch0, jax.random.PRNGKey(0)))
  c0 = t0.reshape(-1, t0.shape[-1]).mean(0) + 0.05 * jax.random.normal(
      jax.random.PRNGKey(3), t0.shape[-1:])
  st = st.replace(buffers=dict(st.buffers, center=c0.reshape(st.buffers['center'].shape)))
  center = np.asarray(st.buffers['center'], np.float64)
  for step, batch in enumerate((batch0, batch1)):
    st = st.replace(step=jnp.asarray(step, jnp.int32))
    views = views_fn(batch, jax.random.PRNGKey(step))
    loss, (metrics, new_buffers) = loss_fn(st.params, st, views, jax.random.PRNGKey(9))
    s, t = (np.asarray(a, np.float64) for a in logits(st.params, st.buffers, views))
    temp = 0.04 + (0.07 - 0.04) * step / 4
    np.testing.assert_allclose(metrics['teacher_temp'], temp, rtol=1e-6)
    np.testing.assert_allclose(loss, np_dino_loss(s, t, center, 0.1, temp), rtol=1e-4)
    updated = np_center(center, t, 0.9)
    # The loss with the *updated* center differs, so the order is really tested.
    assert abs(np_dino_loss(s, t, updated, 0.1, temp) - float(loss)) > 1e-3 * abs(float(loss))
    np.testing.assert_allclose(new_buffers['center'], updated, rtol=1e-4, atol=1e-6)
    center = updated
    st = st.replace(buffers=new_buffers)


def test_after_update_is_ema_with_cosine_momentum(one_device):
  _, exp, state, _ = one_device
  method = exp.method
  st = TrainState.create(params=state.params, tx=exp.tx, buffers=state.buffers)
  teacher = jax.tree_util.tree_map(jnp.zeros_like, st.buffers['teacher'])
  st = st.replace(step=jnp.asarray(2, jnp.int32), buffers=dict(st.buffers, teacher=teacher))
  out = method.after_update(st)
  # Update number 1 of 3: m = 1 - (1 - m0) (cos(pi / 3) + 1) / 2.
  m0 = exp.config.method.momentum
  assert m0 < 1
  mom = 1 - (1 - m0) * (np.cos(np.pi * 1 / STEPS) + 1) / 2
  helpers.assert_trees_close(out.buffers['teacher']['params'],
                             jax.tree_util.tree_map(lambda p: (1 - mom) * p,
                                                    {k: st.params[k] for k in ('backbone', 'head')}),
                             rtol=1e-5, atol=1e-7)


def test_training_moves_teacher_and_center(one_device):
  _, _, state, history = one_device
  assert all(h['nonfinite'] == 0 for h in history)
  assert float(np.abs(state.buffers['center']).max()) > 0
  diff = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()), state.params['backbone'],
                                state.buffers['teacher']['params']['backbone'])
  assert max(jax.tree_util.tree_leaves(diff)) > 0
  ent = [h['teacher_entropy'] for h in history]
  assert all(0.0 < e < np.log(64) for e in ent)


def test_one_vs_eight_devices(one_device):
  _, _, state1, hist1 = one_device
  state8, hist8 = helpers.run_steps(tiny_config(), 8, STEPS)
  for h1, h8 in zip(hist1, hist8):
    np.testing.assert_allclose(h1['loss'], h8['loss'], rtol=1e-5)
    np.testing.assert_allclose(h1['teacher_entropy'], h8['teacher_entropy'], rtol=1e-4)
  helpers.assert_trees_close(state1.buffers, state8.buffers, rtol=1e-4, atol=1e-5)
  helpers.assert_trees_close(state1.params, state8.params, rtol=1e-4, atol=1e-5)


def test_checkpoint_restores_teacher_and_center_exactly(one_device):
  workdir, _, state, _ = one_device
  exp = loop.Experiment(tiny_config(), workdir, helpers.mesh(1))
  restored, data_state = exp.restore_or_init()
  exp.checkpointer.close()
  assert int(restored.step) == STEPS and data_state is not None
  for name in ('teacher', 'center'):
    a = jax.tree_util.tree_leaves(jax.device_get(restored.buffers[name]))
    b = jax.tree_util.tree_leaves(state.buffers[name])
    assert len(a) == len(b)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
  helpers.assert_trees_close(restored.opt_state, state.opt_state, rtol=0, atol=0)


def test_features_use_the_teacher(one_device):
  _, exp, state, _ = one_device
  images = jnp.asarray(exp.train_ds[0]['global0'][:4])
  f = exp.method.features(state.params, state.buffers, images)
  x = exp.method.normalize(images)
  teacher = exp.method.backbone.apply({'params': state.buffers['teacher']['params']['backbone']}, x)
  student = exp.method.backbone.apply({'params': state.params['backbone']}, x)
  np.testing.assert_allclose(f, teacher, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(f - student).max()) > 1e-6


def test_attention_maps_png(one_device, tmp_path):
  _, exp, state, _ = one_device
  images = np.asarray(exp.train_ds[0]['global0'][:2])
  att = attention.cls_attention(exp.method, state.params, state.buffers, jnp.asarray(images))
  assert att.shape == (2, 2, 4, 4)       # (images, heads, grid, grid)
  sums = att.reshape(2, 2, -1).sum(-1)   # the rest of the mass is on [CLS] itself
  assert np.all(sums > 0.0) and np.all(sums <= 1.0 + 1e-5)
  paths = attention.write_attention_pngs(images[0], att[0], str(tmp_path), 'img0', scale=2)
  assert len(paths) == 1 + 2 + 2 and all(os.path.exists(p) for p in paths)
  from PIL import Image
  assert Image.open(paths[-1]).size == (3 * 32, 32)   # input + 2 heads, 16 px x 2


@pytest.mark.slow
def test_resnet_backbone_runs_with_batchnorm_teacher():
  """DINO on a (width-4) ResNet-18: student and teacher keep their own BatchNorm statistics; the
  teacher's (train-mode, as DINO's SyncBN teacher) are what evaluation uses."""
  c = tiny_config()
  c.model.backbone = 'resnet18'
  state, history = helpers.run_steps(c, 1, 2)
  assert all(h['nonfinite'] == 0 and np.isfinite(h['loss']) for h in history)
  stats = jax.device_get(state.buffers['batch_stats'])
  t_stats = jax.device_get(state.buffers['teacher']['batch_stats'])
  assert set(stats) == {'backbone'} and set(t_stats) == {'backbone'}
  moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()),
                                 stats['backbone'], t_stats['backbone'])
  assert max(jax.tree_util.tree_leaves(moved)) > 0   # two different sets of running stats


def test_batchnorm_head_uses_batch_statistics_of_all_crops():
  """``use_bn_in_head``: BatchNorm after each hidden layer of the head. The student head
  normalises over all crops of the batch together (the official MultiCropWrapper concatenates
  every crop before the head), the teacher head over its two global crops, each in train mode
  with its own running statistics; the loss is DINO's on those logits."""
  c = tiny_config()
  c.method.use_bn_in_head = True
  exp = loop.Experiment(c, tempfile.mkdtemp(), helpers.mesh(1))
  method = exp.method
  state = exp.initial_state()
  state, _ = exp.step_fn(state, sharding.global_batch(exp.mesh, exp.train_ds[0]))
  state = jax.device_get(state)
  stats, teacher_stats = state.buffers['batch_stats'], state.buffers['teacher']['batch_stats']
  assert set(stats) == {'head'} and set(teacher_stats) == {'head'} and 'bn0' in stats['head']
  views = jax.jit(method.views)(exp.train_ds[1], jax.random.PRNGKey(1))
  loss, (metrics, new_buffers) = jax.jit(method.loss)(state.params, state, views,
                                                       jax.random.PRNGKey(2))

  def head(params, head_stats, feats):
    out, upd = method.head.apply({'params': params, 'batch_stats': head_stats}, feats,
                                 train=True, mutable=['batch_stats'])
    return np.asarray(out, np.float64), upd['batch_stats']

  b = views['global0'].shape[0]
  crops = [views[k] for k in ('global0', 'global1', 'local0', 'local1')]
  feats = jnp.concatenate([method.backbone.apply({'params': state.params['backbone']}, x)
                           for x in crops])
  s, s_stats = head(state.params['head'], stats['head'], feats)
  t_feats = jnp.concatenate([method.backbone.apply(
      {'params': state.buffers['teacher']['params']['backbone']}, x) for x in crops[:2]])
  t, t_stats = head(state.buffers['teacher']['params']['head'], teacher_stats['head'], t_feats)
  center = np.asarray(state.buffers['center'], np.float64)
  np.testing.assert_allclose(
      loss, np_dino_loss(s.reshape(4, b, -1), t.reshape(2, b, -1), center, 0.1,
                         float(metrics['teacher_temp'])), rtol=1e-4)
  helpers.assert_trees_close(new_buffers['batch_stats']['head'], s_stats)
  helpers.assert_trees_close(new_buffers['teacher']['batch_stats']['head'], t_stats)
  # Each BatchNorm normalises over its own batch: per-crop statistics would give other logits.
  s_g, _ = head(state.params['head'], stats['head'], feats[:2 * b])
  assert np.abs(s_g - s[:2 * b]).max() > 1e-4
