"""data.kmeans: reproducible k-means for HuBERT units, and PNMI / purities against hand values."""
import math

import numpy as np
import pytest

from ssl_jax.data import kmeans


def _blobs(seed, k=6, per=400, dim=8, spread=0.3):
  """k Gaussian blobs with centres 10 apart on a random simplex-like layout, shuffled."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(k, dim)) * 10
  labels = np.repeat(np.arange(k), per)
  x = centres[labels] + spread * rng.normal(size=(k * per, dim))
  order = rng.permutation(len(x))
  return x[order].astype(np.float32), labels[order]


def test_same_seed_same_centroids():
  x = np.random.default_rng(0).normal(size=(3000, 5)).astype(np.float32)
  a = kmeans.fit_kmeans(x, 20, seed=3, iters=20)
  b = kmeans.fit_kmeans(x, 20, seed=3, iters=20)
  c = kmeans.fit_kmeans(x, 20, seed=4, iters=20)
  assert a.shape == (20, 5) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  mb = [kmeans.fit_kmeans(x, 20, seed=3, iters=20, batch_size=500) for _ in range(2)]
  np.testing.assert_array_equal(mb[0], mb[1])


@pytest.mark.parametrize('batch_size', [None, 256])
def test_recovers_separated_blobs(batch_size):
  x, truth = _blobs(0)
  centres = kmeans.fit_kmeans(x, 6, seed=0, iters=50, batch_size=batch_size)
  units = kmeans.assign(x, centres)
  assert units.dtype == np.int32
  # Up to a permutation of the cluster ids: a one-to-one contingency table.
  table = np.zeros((6, 6), int)
  np.add.at(table, (truth, units), 1)
  assert np.all((table > 0).sum(0) == 1) and np.all((table > 0).sum(1) == 1)
  assert kmeans.pnmi(truth, units) == pytest.approx(1.0)


def test_assign_matches_brute_force_and_lloyd_lowers_inertia():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(5000, 7)).astype(np.float32)
  c = rng.normal(size=(30, 7)).astype(np.float32)
  want = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
  np.testing.assert_array_equal(kmeans.assign(x, c, chunk=1024), want)   # padded last chunk
  init = kmeans.kmeans_plus_plus(x, 30, np.random.default_rng(0))
  assert len({tuple(r) for r in init}) == 30 and all(
      (x == r).all(1).any() for r in init)                               # distinct data rows
  fitted = kmeans.fit_kmeans(x, 30, seed=0, iters=30)
  assert kmeans.kmeans_inertia(x, fitted) < 0.9 * kmeans.kmeans_inertia(x, init)


def test_duplicate_points_and_empty_clusters():
  """Three distinct points, k = 3: k-means++ seeds one of each (a repeated point has zero
  probability), and the centroids are the points."""
  pts = np.array([[0., 0.], [5., 5.], [-5., 5.]], np.float32)
  x = np.repeat(pts, [50, 30, 20], axis=0)
  c = kmeans.fit_kmeans(x, 3, seed=0)
  np.testing.assert_allclose(c[np.lexsort(c.T)], pts[np.lexsort(pts.T)])


def test_pnmi_bijection_independent_and_hand_value():
  rng = np.random.default_rng(0)
  phones = rng.integers(0, 10, size=20000)
  perm = rng.permutation(10) + 100
  assert kmeans.pnmi(phones, perm[phones]) == pytest.approx(1.0)
  # Independent units: I(y; z) is only the plug-in bias ~ (10 - 1)(20 - 1) / (2 N H(y)).
  units = rng.integers(0, 20, size=200000)
  phones = rng.integers(0, 10, size=200000)
  assert 0.0 <= kmeans.pnmi(phones, units) < 2e-3
  # 2x2 table [[3, 1], [1, 3]]: I = ln 2 - H_b(1/4), H(y) = ln 2, so PNMI = 1 - H_b(1/4) / ln 2.
  y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  z = np.array([0, 0, 0, 1, 1, 1, 1, 0])
  hb = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
  np.testing.assert_allclose(kmeans.pnmi(y, z), 1 - hb / math.log(2), rtol=1e-12)  # 0.188722
  # More units than phones can only keep or raise PNMI (a refinement of z).
  assert kmeans.pnmi(y, z * 10 + np.arange(8) % 2) >= kmeans.pnmi(y, z)


def test_purities_hand_value():
  # counts[phone][unit] = [[4, 0, 1], [0, 2, 1]], N = 8.
  y = np.array(['a'] * 5 + ['b'] * 3)
  z = np.array([0, 0, 0, 0, 2, 1, 1, 2])
  assert kmeans.phone_purity(y, z) == pytest.approx((4 + 2 + 1) / 8)   # max over phones per unit
  assert kmeans.cluster_purity(y, z) == pytest.approx((4 + 2) / 8)     # max over units per phone


def test_empty_cluster_moves_to_farthest_frame():
  """A centre that wins no frame is moved to the frame farthest from its centre (sklearn's
  relocation), so no unit is wasted."""
  import jax.numpy as jnp
  x = np.array([[0., 0.], [0.1, 0.], [10., 0.], [10.2, 0.]], np.float32)
  c = np.array([[0., 0.], [1000., 1000.]], np.float32)   # the second centre gets nothing
  new, inertia, _ = kmeans._lloyd_step(jnp.asarray(x), jnp.asarray(c), chunk=4)
  np.testing.assert_allclose(np.asarray(new), [[5.075, 0.], [10.2, 0.]], rtol=1e-6)
  np.testing.assert_allclose(float(inertia), 0.01 + 100 + 10.2 ** 2, rtol=1e-5)
