"""data.image_ops: the image operations methods share (moved from the MultiMAE and RotNet tests
with the functions, issue 29 item 4)."""
import jax.numpy as jnp
import numpy as np

from ssl_jax.data import image_ops


def test_rotations_match_numpy():
  x = np.random.default_rng(1).uniform(size=(3, 5, 5, 2)).astype(np.float32)
  imgs, labels = image_ops.all_rotations(jnp.asarray(x))
  assert imgs.shape == (12, 5, 5, 2)
  np.testing.assert_array_equal(labels, np.repeat(np.arange(4), 3))
  for k in range(4):
    np.testing.assert_array_equal(imgs[3 * k:3 * k + 3], np.rot90(x, k, axes=(1, 2)))
  # the top-left pixel goes to the bottom-left after one counter-clockwise turn
  np.testing.assert_array_equal(imgs[3, -1, 0], x[0, 0, 0])
  ks = jnp.array([3, 0, 2])
  per = image_ops.rotate90_per_example(jnp.asarray(x), ks)
  for i, k in enumerate([3, 0, 2]):
    np.testing.assert_allclose(per[i], np.rot90(x[i], k, axes=(0, 1)))


def test_sobel_edges_formula():
  x = np.zeros((1, 5, 5, 3), np.float32)
  x[:, :, 3:] = 1.0                                  # a vertical step edge between columns 2, 3
  e = np.asarray(image_ops.sobel_edges(jnp.asarray(x)))[0, :, :, 0]
  np.testing.assert_allclose(e[2], [0, 0, 4, 4, 0], atol=1e-5)   # |[-1 0 1;-2 0 2;-1 0 1]| = 4
