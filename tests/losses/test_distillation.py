"""losses.distillation: every loss of the family against a hand-computed value and a literal numpy
transcription of its paper formula. Moved from the method tests (methods/test_data2vec.py,
methods/test_dino_ibot_data2vec.py), which keep the methods' train steps."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses


LN = math.log


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


def test_loss_ignores_unmasked_predictions():
  """Gradient of the loss w.r.t. the predictions is zero exactly at the unmasked tokens."""
  from ssl_jax import losses
  rng = np.random.default_rng(0)
  pred = jnp.asarray(rng.normal(size=(2, 6, 4)), jnp.float32)
  target = jnp.asarray(rng.normal(size=(2, 6, 4)), jnp.float32)
  mask = jnp.asarray(rng.random((2, 6)) < 0.5)
  g = np.asarray(jnp.abs(jax.grad(lambda p: losses.data2vec_loss(p, target, mask))(pred)).sum(-1))
  assert np.all(g[~np.asarray(mask)] == 0) and np.all(g[np.asarray(mask)] > 0)


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
