"""losses.hybrid: every loss of the family against a hand-computed value and a literal numpy
transcription of its paper formula. Moved from the method tests (methods/test_cmae.py), which
keep the methods' train steps."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses


def np_cmae(pred, target, mask, q, k, tau, lam, norm_pix):
  """Huang et al. 2023: L = L_r + lambda_c L_c; L_r = MAE's masked MSE (unbiased per-patch
  variance, eps 1e-6), L_c = 2 tau CrossEntropy(q k^T / tau, arange(N)) on unit vectors."""
  pred, target, q, k = (np.asarray(a, np.float64) for a in (pred, target, q, k))
  if norm_pix:
    target = (target - target.mean(-1, keepdims=True)) / np.sqrt(
        target.var(-1, ddof=1, keepdims=True) + 1e-6)
  per_patch = ((pred - target) ** 2).mean(-1)
  rec = (per_patch * mask).sum() / mask.sum()
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  logits = unit(q) @ unit(k).T / tau
  ce = [np.log(np.exp(logits[i]).sum()) - logits[i, i] for i in range(len(q))]
  con = 2 * tau * np.mean(ce)
  return rec + lam * con, rec, con


@pytest.mark.parametrize('norm_pix', [False, True])
def test_loss_matches_numpy(norm_pix):
  rng = np.random.default_rng(0)
  pred, target = rng.normal(size=(2, 6, 12, 5)).astype(np.float32)
  mask = (rng.uniform(size=(6, 12)) < 0.7).astype(np.float32)
  q, k = rng.normal(size=(2, 6, 8)).astype(np.float32)
  total, aux = losses.cmae_loss(pred, target, mask, q, k, 0.07, 0.5, norm_pix)
  ref, rec, con = np_cmae(pred, target, mask, q, k, 0.07, 0.5, norm_pix)
  np.testing.assert_allclose(aux['loss_recon'], rec, rtol=1e-5)
  np.testing.assert_allclose(aux['loss_contrastive'], con, rtol=1e-5)
  np.testing.assert_allclose(total, ref, rtol=1e-5)


def test_loss_hand_value():
  # Reconstruction: patch 0 masked with error (1, 3) -> (1 + 9) / 2 = 5; patch 1 visible, ignored.
  pred = jnp.array([[[1.0, 3.0], [100.0, 100.0]]])
  target = jnp.zeros((1, 2, 2))
  mask = jnp.array([[1.0, 0.0]])
  # Contrastive, tau = 0.5: s(q0, k0) = 1, s(q0, k1) = c; s(q1, k0) = 0, s(q1, k1) = c.
  q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  k = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  c = 1 / math.sqrt(2)
  l0 = -2.0 + math.log(math.exp(2.0) + math.exp(2 * c))
  l1 = -2 * c + math.log(1.0 + math.exp(2 * c))
  total, aux = losses.cmae_loss(pred, target, mask, q, k, 0.5, 2.0, False)
  np.testing.assert_allclose(aux['loss_recon'], 5.0, rtol=1e-6)
  np.testing.assert_allclose(aux['loss_contrastive'], 2 * 0.5 * (l0 + l1) / 2, rtol=1e-6)
  np.testing.assert_allclose(total, 5.0 + 2.0 * (l0 + l1) / 2, rtol=1e-6)
  np.testing.assert_allclose(aux['contrastive_acc'], 1.0)


def test_reconstruction_gradient_only_on_masked_patches_and_none_to_target():
  rng = np.random.default_rng(1)
  pred, target = (jnp.asarray(a) for a in rng.normal(size=(2, 4, 9, 6)).astype(np.float32))
  mask = jnp.asarray((rng.uniform(size=(4, 9)) < 0.5).astype(np.float32))
  q, k = (jnp.asarray(a) for a in rng.normal(size=(2, 4, 8)).astype(np.float32))
  g_pred, g_k = jax.grad(lambda p, kk: losses.cmae_loss(p, target, mask, q, kk)[0],
                         argnums=(0, 1))(pred, k)
  touched = np.abs(np.asarray(g_pred)).max(-1) > 0
  np.testing.assert_array_equal(touched, np.asarray(mask) == 1)
  assert not np.any(np.asarray(g_k))
