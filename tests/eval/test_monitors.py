"""The label-free monitors (eval/monitors.py) on hand cases: RankMe of a collapsed embedding is ~1
and of a random one ~D, the std detector, alignment and uniformity of known configurations."""
import numpy as np
import pytest

from ssl_jax.eval import monitors


def test_rankme_collapsed_is_one_and_random_is_near_dim():
  rng = np.random.default_rng(0)
  d = 32
  collapsed = np.outer(rng.normal(size=512), rng.normal(size=d))   # rank 1
  assert monitors.rankme(collapsed) == pytest.approx(1.0, abs=0.05)
  isotropic = rng.normal(size=(4096, d))
  assert 0.9 * d < monitors.rankme(isotropic) <= d
  # Two equal directions: exactly 2 (entropy log 2).
  two = np.zeros((10, d))
  two[:5, 0], two[5:, 1] = 1.0, 1.0
  assert monitors.rankme(two) == pytest.approx(2.0, rel=1e-3)


def test_embedding_std_healthy_near_inverse_sqrt_dim_and_collapsed_near_zero():
  rng = np.random.default_rng(1)
  d = 64
  healthy = monitors.label_free_metrics(rng.normal(size=(2048, d)))
  assert healthy['embedding_std'] == pytest.approx(1 / np.sqrt(d), rel=0.05)
  assert monitors.collapse_warning(healthy) == ''
  point = np.ones((256, d)) + 1e-4 * rng.normal(size=(256, d))
  collapsed = monitors.label_free_metrics(point)
  assert collapsed['embedding_std_ratio'] < 0.01
  assert 'complete collapse' in monitors.collapse_warning(collapsed)
  line = np.outer(rng.normal(size=256), rng.normal(size=d))   # spread, but on one line
  assert 'dimensional collapse' in monitors.collapse_warning(monitors.label_free_metrics(line))


def test_alignment_hand_cases():
  a = np.array([[1.0, 0.0], [0.0, 2.0]])
  assert monitors.alignment(a, 3 * a) == pytest.approx(0.0)             # same directions
  assert monitors.alignment(a, -a) == pytest.approx(4.0)                # antipodal: |2|^2
  assert monitors.alignment(a, a[:, ::-1]) == pytest.approx(2.0)        # orthogonal: sqrt(2)^2


def test_uniformity_hand_cases():
  same = np.ones((5, 3))
  assert monitors.uniformity(same) == pytest.approx(0.0)                # all one point
  pair = np.array([[1.0, 0.0], [-1.0, 0.0]])                            # one pair, |d|^2 = 4
  assert monitors.uniformity(pair) == pytest.approx(-8.0)
  square = np.array([[1.0, 0], [0, 1.0], [-1.0, 0], [0, -1.0]])         # 4 at 2, 2 at 4
  assert monitors.uniformity(square) == pytest.approx(np.log((4 * np.exp(-4) + 2 * np.exp(-8)) / 6))


def test_two_view_subset_is_fixed_and_mirrored():
  images = np.arange(10 * 2 * 3 * 3).reshape(10, 2, 3, 3).astype(np.uint8)
  src = [{'image': im, 'label': 0, 'index': i} for i, im in enumerate(images)]
  a = monitors.TwoViewSubset(src, seed=3, n=4)
  b = monitors.TwoViewSubset(src, seed=3, n=4, second=True)
  assert len(a) == 4 and list(a.indices) == list(b.indices)
  np.testing.assert_array_equal(b[1]['image'], a[1]['image'][:, ::-1])
