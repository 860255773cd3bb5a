"""losses.masked: every loss of the family against a hand-computed value and a literal numpy
transcription of its paper formula. Moved from the method tests (models/test_decoders.py), which
keep the methods' train steps."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses
from ssl_jax.models.vit import unpatchify


RNG = np.random.default_rng(0)


def np_mae(pred, target, mask, norm_pix):
  """He et al. 2022, Sec. 3 / models_mae.forward_loss, written loop-free in numpy."""
  if norm_pix:
    mu = target.mean(-1, keepdims=True)
    var = target.var(-1, keepdims=True, ddof=1)
    target = (target - mu) / (var + 1e-6) ** 0.5
  per = ((pred - target) ** 2).mean(-1)
  return (per * mask).sum() / mask.sum()


def np_simmim(pred, target, mask, p):
  """Xie et al. 2022 Eq. 1 on images: L1 over masked pixels / (#masked pixels * C)."""
  img_pred = np.asarray(unpatchify(pred, p, 2, 2, 3))
  img_tgt = np.asarray(unpatchify(target, p, 2, 2, 3))
  pix_mask = np.repeat(np.repeat(mask.reshape(-1, 2, 2), p, 1), p, 2)[..., None]
  l1 = np.abs(img_pred - img_tgt)
  return (l1 * pix_mask).sum() / (pix_mask.sum() + 1e-5) / 3


def np_masked_ce(logits, labels, mask):
  """Bao et al. 2022 Eq. 1: mean over masked positions of -log softmax at the visual token."""
  total, count = 0.0, 0
  for b in range(logits.shape[0]):
    for i in range(logits.shape[1]):
      if mask[b, i]:
        z = logits[b, i] - logits[b, i].max()
        total += -(z[labels[b, i]] - np.log(np.exp(z).sum()))
        count += 1
  return total / count


def np_vq(x, x_rec, z_e, z_q, beta):
  """van den Oord et al. 2017 Eq. 3 (values; the stop-gradients only change gradients)."""
  return ((x - x_rec) ** 2).mean() + ((z_e - z_q) ** 2).mean() * (1 + beta)


def np_local_norm(x, window):
  """SimMIM's norm_targets, pixel by pixel: in-image window mean and unbiased variance."""
  b, h, w, c = x.shape
  r = window // 2
  out = np.zeros_like(x)
  for i in range(h):
    for j in range(w):
      patch = x[:, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].reshape(b, -1, c)
      mu, var = patch.mean(1), patch.var(1, ddof=1)
      out[:, i, j] = (x[:, i, j] - mu) / np.sqrt(np.maximum(var, 0) + 1e-6)
  return out


def test_mae_loss_hand_values():
  pred = jnp.array([[[1.0, 2.0], [3.0, 4.0]]])
  mask = jnp.array([[1.0, 0.0]])
  # Patch 0: (1 + 4) / 2 = 2.5; patch 1 is visible and ignored.
  np.testing.assert_allclose(losses.mae_loss(pred, jnp.zeros_like(pred), mask), 2.5, rtol=1e-6)
  # norm_pix: target [0, 2] -> mean 1, unbiased var 2 -> [-1, 1]/sqrt(2); pred 0 -> 0.5.
  target = jnp.array([[[0.0, 2.0], [5.0, 5.0]]])
  np.testing.assert_allclose(losses.mae_loss(jnp.zeros_like(target), target, mask, True),
                             0.5 * 2 / (2 + 1e-6), rtol=1e-6)


@pytest.mark.parametrize('norm_pix', [False, True])
def test_mae_loss_matches_numpy(norm_pix):
  pred, target = RNG.normal(size=(3, 4, 12)), RNG.normal(size=(3, 4, 12))
  mask = (RNG.random((3, 4)) < 0.6).astype(np.float32)
  mask[0, 0] = 1
  np.testing.assert_allclose(losses.mae_loss(pred, target, mask, norm_pix),
                             np_mae(pred, target, mask, norm_pix), rtol=1e-5)


def test_simmim_loss_hand_and_numpy():
  pred = jnp.array([[[1.0, -1.0], [2.0, 2.0]]])
  mask = jnp.array([[0.0, 1.0]])
  np.testing.assert_allclose(losses.simmim_l1_loss(pred, jnp.zeros_like(pred), mask),
                             2.0 / (1 + 1e-5), rtol=1e-6)
  p = 2
  pred, target = RNG.normal(size=(2, 4, p * p * 3)), RNG.normal(size=(2, 4, p * p * 3))
  mask = np.array([[1, 0, 0, 1], [0, 1, 1, 1]], np.float32)
  np.testing.assert_allclose(losses.simmim_l1_loss(pred, target, mask),
                             np_simmim(pred, target, mask, p), rtol=1e-5)


def test_simmim_loss_kinds_by_hand():
  # masked patch: differences 0.5 and -3 -> l1 (0.5 + 3) / 2, l2 (0.25 + 9) / 2,
  # smooth-l1 (0.125 + 2.5) / 2; the unmasked patch's huge error does not count.
  pred = jnp.array([[[0.5, -3.0], [100.0, 100.0]]])
  mask = jnp.array([[1.0, 0.0]])
  for kind, want in (('l1', 1.75), ('l2', 4.625), ('smooth_l1', 1.3125)):
    np.testing.assert_allclose(losses.simmim_loss(pred, jnp.zeros_like(pred), mask, kind),
                               want / (1 + 1e-5), rtol=1e-6)
  with pytest.raises(ValueError, match="'l3' is not one of"):
    losses.simmim_loss(pred, pred, mask, 'l3')


def test_local_norm_targets_against_windowed_numpy():
  x = RNG.normal(size=(2, 7, 6, 3)).astype(np.float32) * 2 + 1
  for window in (3, 5):
    np.testing.assert_allclose(losses.local_norm_targets(x, window), np_local_norm(x, window),
                               rtol=1e-4, atol=1e-4)
  flat = np.zeros((1, 5, 5, 1), np.float32)      # constant images give 0, not NaN
  np.testing.assert_allclose(losses.local_norm_targets(flat + 3, 3), flat, atol=1e-3)
  with pytest.raises(ValueError, match='odd'):
    losses.local_norm_targets(x, 4)


def test_masked_cross_entropy_hand_and_numpy():
  logits = jnp.array([[[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]])
  labels = jnp.array([[0, 2]])
  loss, acc = losses.masked_cross_entropy(logits, labels, jnp.array([[1.0, 0.0]]))
  np.testing.assert_allclose(loss, np.log(3.0), rtol=1e-6)
  np.testing.assert_allclose(acc, 1.0)  # argmax of equal logits is index 0 = the label
  logits = RNG.normal(size=(2, 5, 7))
  labels = RNG.integers(0, 7, (2, 5))
  mask = (RNG.random((2, 5)) < 0.5).astype(np.float32)
  mask[0, 0] = 1
  np.testing.assert_allclose(losses.masked_cross_entropy(logits, labels, mask)[0],
                             np_masked_ce(logits, labels, mask), rtol=1e-5)


def test_losses_touch_masked_patches_only():
  """d loss / d (prediction or target) is exactly zero at every visible patch."""
  b, n, d = 2, 6, 12
  pred, target = RNG.normal(size=(b, n, d)), RNG.normal(size=(b, n, d))
  mask = np.array([[1, 0, 1, 0, 0, 1], [0, 0, 1, 1, 1, 0]], np.float32)
  visible = mask == 0
  for fn in (lambda p, t: losses.mae_loss(p, t, mask),
             lambda p, t: losses.mae_loss(p, t, mask, norm_pix_loss=True),
             lambda p, t: losses.simmim_l1_loss(p, t, mask)):
    gp, gt = jax.grad(fn, argnums=(0, 1))(pred, target)
    assert np.all(np.asarray(gp)[visible] == 0) and np.all(np.asarray(gt)[visible] == 0)
    assert np.abs(np.asarray(gp)[~visible]).min() > 0
  logits = RNG.normal(size=(b, n, 5))
  g = jax.grad(lambda z: losses.masked_cross_entropy(z, np.zeros((b, n), int), mask)[0])(logits)
  assert np.all(np.asarray(g)[visible] == 0) and np.abs(np.asarray(g)[~visible]).sum() > 0


def test_vq_vae_loss_values_and_gradients():
  x, x_rec = jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0])
  z_e, z_q = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 0.0]])
  total, parts = losses.vq_vae_loss(x, x_rec, z_e, z_q, beta=0.25)
  np.testing.assert_allclose(parts['recon'], 2.0)        # (0 + 4) / 2
  np.testing.assert_allclose(parts['codebook'], 0.5)     # (1 + 0) / 2
  np.testing.assert_allclose(parts['commitment'], 0.5)
  np.testing.assert_allclose(total, 2.0 + 0.5 + 0.25 * 0.5)
  ze, zq = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
  xx, xr = RNG.normal(size=(2, 5)), RNG.normal(size=(2, 5))
  np.testing.assert_allclose(losses.vq_vae_loss(xx, xr, ze, zq, 0.3)[0],
                             np_vq(xx, xr, ze, zq, 0.3), rtol=1e-5)
  # The codebook term moves only the codebook, the commitment term (x beta) only the encoder.
  g_e, g_q = jax.grad(lambda a, b: losses.vq_vae_loss(xx, xr, a, b, 0.3)[0], (0, 1))(ze, zq)
  np.testing.assert_allclose(g_e, 0.3 * 2 * (ze - zq) / ze.size, rtol=1e-5)
  np.testing.assert_allclose(g_q, 2 * (zq - ze) / ze.size, rtol=1e-5)


def test_straight_through_estimator():
  z_e, z_q, w = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
  np.testing.assert_allclose(losses.straight_through(z_e, z_q), z_q, rtol=1e-6)
  g_e, g_q = jax.grad(lambda a, b: jnp.sum(w * losses.straight_through(a, b)), (0, 1))(z_e, z_q)
  np.testing.assert_allclose(g_e, w, rtol=1e-6)   # gradient copied to the encoder output
  np.testing.assert_array_equal(g_q, 0.0)
