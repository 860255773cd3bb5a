"""Losses, head, masks and optimiser pieces of DINO / iBOT / data2vec (no train-step compiles).

The method-level tests (1 vs 8 devices, checkpoints, center order inside the method) are in
test_dino.py, test_ibot.py and test_data2vec.py, one compile-heavy module per method.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses
from ssl_jax.methods.distillation import dino as dino_lib
from ssl_jax.methods.distillation.masks import BlockMaskBank
from ssl_jax.models.heads import DINOHead

LN = math.log


# ----------------------------------------------------------------------------- numpy references

def np_softmax(x, axis=-1):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x, axis=-1):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def np_dino_loss(student, teacher, center, student_temp, teacher_temp):
  """Caron et al. 2021, Algorithm 1 / DINOLoss.forward, written as the official double loop."""
  t = np_softmax((teacher - center) / teacher_temp)
  total, n_terms = 0.0, 0
  for iq in range(teacher.shape[0]):
    for v in range(student.shape[0]):
      if v == iq:
        continue
      loss = np.sum(-t[iq] * np_log_softmax(student[v] / student_temp), axis=-1)
      total += loss.mean()
      n_terms += 1
  return total / n_terms


def np_center(center, teacher, momentum):
  batch_center = teacher.reshape(-1, teacher.shape[-1]).mean(0)
  return center * momentum + batch_center * (1 - momentum)


def np_ibot_patch_loss(student, teacher, masks, center, student_temp, teacher_temp):
  """Zhou et al. 2022, iBOTLoss: same-view pairs, masked mean per image, then batch mean."""
  total = 0.0
  for q in range(teacher.shape[0]):
    t = np_softmax((teacher[q] - center) / teacher_temp)
    ce = np.sum(-t * np_log_softmax(student[q] / student_temp), axis=-1)     # (B, N)
    m = masks[q].astype(np.float64)
    total += (np.sum(ce * m, -1) / np.maximum(m.sum(-1), 1.0)).mean()
  return total / teacher.shape[0]


def np_instance_norm(x, eps=1e-5):
  mean = x.mean(axis=1, keepdims=True)
  var = x.var(axis=1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps)


# ----------------------------------------------------------------------------- DINO loss

def test_dino_loss_hand_computed_two_steps():
  """K = 2, B = 1, 2 global + 1 local crop, temperatures 1: every term by hand. Step 2 uses
  the center from step 1 (0.9 * 0 + 0.1 * mean teacher logits)."""
  l3 = LN(3.0)
  teacher = np.array([[[0.0, 0.0]], [[l3, 0.0]]])            # softmax: [.5,.5], [.75,.25]
  student = np.array([[[0.0, 0.0]], [[l3, 0.0]], [[0.0, l3]]])
  # pairs (q, v): (0,1), (0,2), (1,0), (1,2)
  h01 = -(0.5 * LN(0.75) + 0.5 * LN(0.25))
  h02 = -(0.5 * LN(0.25) + 0.5 * LN(0.75))
  h10 = -(0.75 * LN(0.5) + 0.25 * LN(0.5))
  h12 = -(0.75 * LN(0.25) + 0.25 * LN(0.75))
  expected1 = (h01 + h02 + h10 + h12) / 4
  c0 = jnp.zeros((1, 2))
  loss1 = losses.dino_loss(jnp.asarray(student), jnp.asarray(teacher), c0, 1.0, 1.0)
  np.testing.assert_allclose(loss1, expected1, rtol=1e-6)
  c1 = losses.ema_center(c0, jnp.asarray(teacher), 0.9)
  np.testing.assert_allclose(c1, [[0.1 * l3 / 2, 0.0]], rtol=1e-6)
  # Step 2, same logits: teacher probabilities are now computed with c1.
  a = 3.0 ** -0.05                                           # exp(-0.1 * ln3 / 2)
  t0 = np.array([a / (a + 1), 1 / (a + 1)])
  t1 = np.array([3 * a / (3 * a + 1), 1 / (3 * a + 1)])
  log_s = [np.log([0.5, 0.5]), np.log([0.75, 0.25]), np.log([0.25, 0.75])]
  expected2 = (-(t0 @ log_s[1]) - (t0 @ log_s[2]) - (t1 @ log_s[0]) - (t1 @ log_s[2])) / 4
  loss2 = losses.dino_loss(jnp.asarray(student), jnp.asarray(teacher), c1, 1.0, 1.0)
  np.testing.assert_allclose(loss2, expected2, rtol=1e-6)
  assert abs(float(loss2) - expected1) > 1e-3  # the center really changed the loss


def test_dino_loss_matches_numpy_over_two_steps():
  rng = np.random.default_rng(0)
  v, g, b, k = 5, 2, 4, 16
  center = np.zeros((1, k))
  j_center = jnp.zeros((1, k))
  for step, tt in enumerate((0.04, 0.055)):
    student = rng.normal(size=(v, b, k)) * 2
    teacher = rng.normal(size=(g, b, k)) * 2 + 0.5
    expected = np_dino_loss(student, teacher, center, 0.1, tt)
    got = losses.dino_loss(jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32),
                           j_center, 0.1, tt)
    np.testing.assert_allclose(got, expected, rtol=2e-5, err_msg=f'step {step}')
    center = np_center(center, teacher, 0.9)
    j_center = losses.ema_center(j_center, jnp.asarray(teacher, jnp.float32), 0.9)
    np.testing.assert_allclose(j_center, center, rtol=1e-5, atol=1e-6)


def test_dino_loss_has_no_teacher_gradient():
  rng = np.random.default_rng(1)
  s = jnp.asarray(rng.normal(size=(3, 2, 4)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(2, 2, 4)), jnp.float32)
  gt = jax.grad(lambda t: losses.dino_loss(s, t, jnp.zeros((1, 4)), 0.1, 0.04))(t)
  gs = jax.grad(lambda s: losses.dino_loss(s, t, jnp.zeros((1, 4)), 0.1, 0.04))(s)
  assert float(jnp.abs(gt).max()) == 0.0 and float(jnp.abs(gs).max()) > 0.0


def test_softmax_entropy_extremes():
  k = 8
  uniform, marg = losses.softmax_entropy(jnp.zeros((4, k)))
  np.testing.assert_allclose([uniform, marg], [LN(k), LN(k)], rtol=1e-6)
  onehot, marg = losses.softmax_entropy(jnp.eye(k)[:4] * 100.0)
  assert float(onehot) < 1e-6
  np.testing.assert_allclose(marg, LN(4), rtol=1e-5)


# ----------------------------------------------------------------------------- iBOT patch loss

def test_ibot_patch_loss_hand_computed():
  l3 = LN(3.0)
  teacher = np.array([[[[0.0, 0.0], [l3, 0.0]],     # image 0: t = [.5,.5], [.75,.25]
                       [[0.0, 0.0], [0.0, 0.0]]]])  # image 1 (unmasked)
  student = np.array([[[[l3, 0.0], [0.0, 0.0]],
                       [[5.0, 0.0], [0.0, 5.0]]]])
  masks = np.array([[[1, 0], [0, 0]]], bool)
  # image 0: only patch 0 counts; image 1 contributes 0 but counts in the batch mean.
  expected = (-(0.5 * LN(0.75) + 0.5 * LN(0.25)) + 0.0) / 2
  got = losses.ibot_patch_loss(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(masks),
                               jnp.zeros((1, 1, 2)), 1.0, 1.0)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_ibot_patch_loss_matches_numpy():
  rng = np.random.default_rng(2)
  g, b, n, k = 2, 3, 9, 12
  s = rng.normal(size=(g, b, n, k)) * 2
  t = rng.normal(size=(g, b, n, k)) * 2
  masks = rng.random((g, b, n)) < 0.4
  masks[0, 1] = False  # an image without masked patches
  center = rng.normal(size=(1, 1, k)) * 0.1
  expected = np_ibot_patch_loss(s, t, masks, center, 0.1, 0.06)
  got = losses.ibot_patch_loss(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32),
                               jnp.asarray(masks), jnp.asarray(center, jnp.float32), 0.1, 0.06)
  np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_ibot_patch_loss_gradient_only_at_masked_positions():
  rng = np.random.default_rng(3)
  g, b, n, k = 2, 2, 6, 5
  s = jnp.asarray(rng.normal(size=(g, b, n, k)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(g, b, n, k)), jnp.float32)
  masks = jnp.asarray(rng.random((g, b, n)) < 0.5)
  grad = jax.grad(lambda s: losses.ibot_patch_loss(s, t, masks, jnp.zeros(k), 0.1, 0.04))(s)
  per_pos = np.asarray(jnp.abs(grad).sum(-1))
  m = np.asarray(masks)
  assert m.any() and (~m).any()
  assert np.all(per_pos[~m] == 0.0)
  assert np.all(per_pos[m] > 0.0)
  gt = jax.grad(lambda t: losses.ibot_patch_loss(s, t, masks, jnp.zeros(k), 0.1, 0.04))(t)
  assert float(jnp.abs(gt).max()) == 0.0


# ----------------------------------------------------------------------------- data2vec

def test_data2vec_targets_match_numpy():
  rng = np.random.default_rng(4)
  layers = [rng.normal(size=(2, 5, 3)) * (i + 1) + i for i in range(4)]
  expected = sum(np_instance_norm(l) for l in layers[-2:]) / 2
  got = losses.data2vec_targets([jnp.asarray(l, jnp.float32) for l in layers], 2)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  # Each channel of each image has zero mean over tokens after instance norm.
  np.testing.assert_allclose(np.asarray(got).mean(1), 0.0, atol=1e-5)
  # Optional final parameter-free layer norm (fairseq layer_norm_targets).
  ln = (expected - expected.mean(-1, keepdims=True)) / np.sqrt(
      expected.var(-1, keepdims=True) + 1e-5)
  got = losses.data2vec_targets([jnp.asarray(l, jnp.float32) for l in layers], 2,
                                final_norm='layer')
  np.testing.assert_allclose(got, ln, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match='top_k'):
    losses.data2vec_targets(layers, 5)


def test_data2vec_loss_hand_computed():
  pred = jnp.zeros((1, 2, 4))
  target = jnp.ones((1, 2, 4)) * jnp.array([1.0, 3.0])[None, :, None]
  mask = jnp.array([[1, 0]])
  # L2: sum over D of 1^2 = 4, / sqrt(4) = 2; only token 0 is masked.
  np.testing.assert_allclose(losses.data2vec_loss(pred, target, mask, 0.0), 2.0, rtol=1e-6)
  # Smooth L1, beta 2: |d| = 1 <= 2 -> 0.5 * 1 / 2 = 0.25 per channel -> 1.0 / 2 = 0.5.
  np.testing.assert_allclose(losses.data2vec_loss(pred, target, mask, 2.0), 0.5, rtol=1e-6)
  # Both masked: token 1 has |d| = 3 > 2 -> 3 - 1 = 2 per channel -> 8 / 2 = 4; mean (0.5+4)/2.
  np.testing.assert_allclose(losses.data2vec_loss(pred, target, jnp.ones((1, 2)), 2.0), 2.25,
                             rtol=1e-6)


# ----------------------------------------------------------------------------- DINO head

@pytest.mark.parametrize('norm_last_layer', [True, False])
def test_dino_head_weight_norm(norm_last_layer):
  head = DINOHead(out_dim=7, hidden_dim=8, bottleneck_dim=5, norm_last_layer=norm_last_layer)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 6))
  params = head.init(jax.random.PRNGKey(1), x)['params']
  assert ('last_layer_g' in params) == (not norm_last_layer)
  assert set(params) >= {'fc0', 'fc1', 'fc2', 'last_layer_v'}
  assert params['fc2']['kernel'].shape == (8, 5) and params['last_layer_v'].shape == (5, 7)
  # Reference: MLP (GELU) -> L2 normalise -> x @ (g * V / ||V||_col).
  h = x
  for i in range(2):
    h = jax.nn.gelu(h @ params[f'fc{i}']['kernel'] + params[f'fc{i}']['bias'], approximate=False)
  h = h @ params['fc2']['kernel'] + params['fc2']['bias']
  h = h / np.linalg.norm(h, axis=-1, keepdims=True)
  v = np.asarray(params['last_layer_v'])
  w = v / np.linalg.norm(v, axis=0, keepdims=True)
  if not norm_last_layer:
    params = jax.tree_util.tree_map(lambda a: a, params)
    params['last_layer_g'] = params['last_layer_g'] * 2.0
    w = w * 2.0
  out = head.apply({'params': params}, x)
  np.testing.assert_allclose(out, h @ w, rtol=1e-5, atol=1e-5)
  # With g = 1 every logit is a cosine similarity.
  if norm_last_layer:
    assert float(jnp.abs(out).max()) <= 1.0 + 1e-5


def test_dino_head_separate_patch_layer():
  head = DINOHead(out_dim=6, hidden_dim=8, bottleneck_dim=4, patch_out_dim=3)
  tokens = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6))
  params = head.init(jax.random.PRNGKey(1), tokens)['params']
  cls, patches = head.apply({'params': params}, tokens)
  assert cls.shape == (2, 1, 6) and patches.shape == (2, 4, 3)
  assert 'last_layer2_v' in params


# ----------------------------------------------------------------------------- masks

def test_block_mask_bank():
  bank = BlockMaskBank(6, (0.3, 0.3), size=32, seed=0, min_num_patches=2)
  counts = bank.bank.reshape(32, -1).sum(-1)
  assert counts.max() <= round(0.3 * 36) and counts.min() >= 4
  m = np.asarray(bank.sample(jax.random.PRNGKey(0), 64))
  assert m.shape == (64, 36) and m.dtype == bool
  # Symmetries keep the number of masked patches of a bank entry.
  assert set(m.sum(-1)) <= set(counts)
  half = BlockMaskBank(6, (0.1, 0.5), size=32, seed=0, mask_prob=0.5)
  mh = np.asarray(half.sample(jax.random.PRNGKey(1), 400))
  frac_masked_images = mh.any(-1).mean()
  assert 0.4 < frac_masked_images < 0.6
  # Deterministic given the key.
  np.testing.assert_array_equal(mh, np.asarray(half.sample(jax.random.PRNGKey(1), 400)))


# ----------------------------------------------------------------------------- optimiser pieces

def test_clip_by_leaf_norm_clips_each_tensor():
  tx = dino_lib.clip_by_leaf_norm(1.0)
  g = {'a': jnp.array([3.0, 4.0]), 'b': jnp.array([0.3, 0.4])}
  out, _ = tx.update(g, tx.init(g))
  np.testing.assert_allclose(out['a'], [0.6, 0.8], rtol=1e-5)
  np.testing.assert_allclose(out['b'], [0.3, 0.4], rtol=1e-7)


class _Cfg(dict):
  __getattr__ = dict.__getitem__

  def get(self, k, d=None):
    return dict.get(self, k, d)


def _dino_optimizer(total_steps, freeze_steps):
  """DINO.build_optimizer without building a backbone (only config is used)."""
  optim = _Cfg(name='adamw', lr=0.1, lr_scaling='none', warmup_steps=0, min_lr_ratio=1.0,
               weight_decay=0.04, b1=0.9, b2=0.999, clip_grad_norm=3.0, momentum=0.9)
  method = object.__new__(dino_lib.DINO)
  method.config = _Cfg(optim=optim, method=_Cfg(weight_decay_end=0.4,
                                                freeze_last_layer_steps=freeze_steps),
                       data=_Cfg(batch_size=256))
  method.hp = _Cfg(method.config.method)   # what Method.__init__ parses config.method into
  return method.build_optimizer(total_steps)


def test_weight_decay_schedule_and_frozen_last_layer():
  total, freeze = 10, 3
  tx, lr = _dino_optimizer(total, freeze)
  params = {'head': {'fc0': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)},
                     'last_layer_v': jnp.ones((2, 3))},
            'backbone': {'w': jnp.full((2, 2), 2.0)}}
  state = tx.init(params)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  for step in range(total):
    updates, state = tx.update(zeros, state, params)
    # Zero gradients: AdamW's update is -lr * wd(t) * p on decayed tensors (ndim > 1) only.
    wd = 0.4 - (0.4 - 0.04) * (math.cos(math.pi * step / total) + 1) / 2
    np.testing.assert_allclose(updates['backbone']['w'], -float(lr(step)) * wd * 2.0, rtol=1e-5)
    np.testing.assert_allclose(updates['head']['fc0']['bias'], 0.0)
    last = np.asarray(updates['head']['last_layer_v'])
    if step < freeze:
      np.testing.assert_array_equal(last, 0.0)
    else:
      np.testing.assert_allclose(last, -float(lr(step)) * wd * 1.0, rtol=1e-5)


def test_frozen_last_layer_ignores_gradients():
  tx, _ = _dino_optimizer(10, 2)
  params = {'head': {'last_layer_v': jnp.ones((2, 3)), 'fc0': {'kernel': jnp.ones((2, 2))}}}
  grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 5.0), params)
  state = tx.init(params)
  moved = []
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    moved.append(float(jnp.abs(updates['head']['last_layer_v']).max()))
    assert float(jnp.abs(updates['head']['fc0']['kernel']).max()) > 0
  assert moved[0] == moved[1] == 0.0 and moved[2] > 0.0
