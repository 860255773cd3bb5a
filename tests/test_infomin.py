"""Tests for the InfoMin tooling: the InfoNCE MI estimate against a hand computation and numpy, the
patch-pair geometry, and a two-step sweep that produces a table row and a PNG."""
import jax.numpy as jnp
import numpy as np

from ssl_jax import infomin
from ssl_jax.data import sources


def test_info_nce_lower_bound_hand_and_numpy():
  est, l_nce = infomin.info_nce_lower_bound(jnp.eye(2), jnp.eye(2), temperature=1.0)
  np.testing.assert_allclose(l_nce, np.log(1 + np.exp(-1.0)), rtol=1e-6)
  np.testing.assert_allclose(est, np.log(2) - np.log(1 + np.exp(-1.0)), rtol=1e-6)
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(8, 5)), rng.normal(size=(8, 5))
  n = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  s = n(a) @ n(b).T / 0.3
  ref = np.log(8) - np.mean(np.log(np.exp(s).sum(1)) - np.diag(s))
  np.testing.assert_allclose(infomin.info_nce_lower_bound(jnp.asarray(a), jnp.asarray(b), 0.3)[0],
                             ref, rtol=1e-5)
  # identical, well-separated views saturate the bound at log N
  est, _ = infomin.info_nce_lower_bound(jnp.eye(8) * 10, jnp.eye(8) * 10, temperature=0.01)
  np.testing.assert_allclose(est, np.log(8), atol=1e-4)


def test_patch_pair_distance():
  img = np.arange(20 * 20 * 3, dtype=np.int64).reshape(20, 20, 3) % 251 + 1
  rng = np.random.default_rng(0)
  for d in (0, 5, 10):
    a, b = infomin.patch_pair(img.astype(np.uint8), 8, d, rng)
    assert a.shape == b.shape == (8, 8, 3)
    if d == 0:
      np.testing.assert_array_equal(a, b)
  # the realised offset: locate patch b in the padded image relative to a
  padded = np.pad(img, ((8, 8), (8, 8), (0, 0)))
  a, b = infomin.patch_pair(img.astype(np.uint8), 8, 10, np.random.default_rng(3))
  where = lambda p: [(y, x) for y in range(padded.shape[0] - 7) for x in range(padded.shape[1] - 7)
                     if np.array_equal(padded[y:y + 8, x:x + 8].astype(np.uint8), p)]
  (ya, xa), (yb, xb) = where(a)[0], where(b)[0]
  assert abs(np.hypot(yb - ya, xb - xa) - 10) <= 1.0


def test_sweep_two_settings_and_plot(tmp_path):
  tr, te = sources.builtin_source('digits', 'train'), sources.builtin_source('digits', 'test')
  rows = infomin.sweep(tr.images, tr.labels, te.images, te.labels, [0.0, 4.0], size=8, steps=2,
                       batch=32, width=4)
  assert [r['distance'] for r in rows] == [0.0, 4.0]
  for r in rows:
    assert -0.5 < r['info_nce'] <= np.log(32) + 1e-5
    assert 0.0 <= r['knn_top1'] <= 1.0
  path = tmp_path / 'sweep.png'
  infomin.plot(rows, str(path))
  assert path.stat().st_size > 1000


def test_safe_nt_xent_matches_nt_xent_and_has_finite_grad_at_zero():
  import jax
  from ssl_jax import losses
  rng = np.random.default_rng(1)
  a, b = jnp.asarray(rng.normal(size=(6, 4))), jnp.asarray(rng.normal(size=(6, 4)))
  np.testing.assert_allclose(infomin._nt_xent_safe(a, b, 0.2), losses.nt_xent(a, b, 0.2)[0],
                             rtol=1e-4)
  g = jax.grad(lambda x: infomin._nt_xent_safe(x, b, 0.2))(a.at[0].set(0.0))
  assert np.all(np.isfinite(np.asarray(g)))
