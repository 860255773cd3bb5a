"""Winograd F(2x2, 3x3) convolutions (ssl_jax.models.cpu.winograd) against XLA's and the paper's
matrices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ssl_jax.models.cpu import winograd

# Lavin & Gray 2016, F(2x2, 3x3).
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


def _direct(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                  precision=lax.Precision.HIGHEST)


def test_one_tile_is_the_papers_formula():
  """A 2x2 output from a 4x4 input tile (here: a 2x2 image padded by 1) and one channel pair is
  A^T [(G g G^T) * (B^T d B)] A, with the paper's matrices."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 2, 2, 1))
  g = rng.normal(size=(3, 3))
  d = np.pad(x[0, :, :, 0], 1)
  want = AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)) @ AT.T
  got = winograd.conv3x3(jnp.asarray(x, jnp.float32), jnp.asarray(g[:, :, None, None], jnp.float32))
  np.testing.assert_allclose(np.asarray(got)[0, :, :, 0], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      np.asarray(winograd.kernel_transform(jnp.asarray(g[:, :, None, None], jnp.float32)))[:, 0, 0],
      (G @ g @ G.T).reshape(16), rtol=1e-6)


@pytest.mark.parametrize('shape', [(2, 1, 1, 3), (2, 2, 3, 5), (3, 5, 5, 4), (2, 8, 8, 6),
                                   (1, 7, 10, 2)])
def test_same_as_a_direct_convolution_with_gradients(shape):
  """Any map size (odd sizes are padded to whole tiles and cropped), forward and both gradients."""
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, shape[-1], 7))
  cot = jax.random.normal(jax.random.PRNGKey(2), shape[:3] + (7,))
  y_ref, vjp_ref = jax.vjp(_direct, x, w)
  y, vjp = jax.vjp(winograd.conv3x3, x, w)
  scale = float(jnp.max(jnp.abs(y_ref)))
  np.testing.assert_allclose(y, y_ref, atol=2e-6 * scale)
  for got, want in zip(vjp(cot), vjp_ref(cot)):
    np.testing.assert_allclose(got, want, atol=2e-6 * float(jnp.max(jnp.abs(want))))


@pytest.mark.parametrize('shape', [(2, 4, 6, 3), (1, 5, 3, 2)])
def test_transposed_transforms_are_transposes(shape):
  """<T x, v> = <x, T^T v> for the input and the output transform (the hand-written backward)."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(3))
  x = jax.random.normal(k1, shape)
  tx = winograd.input_transform(x)
  v = jax.random.normal(k2, tx.shape)
  def close(a, b, scale):   # float32 sums of many products: tolerance from the norms
    np.testing.assert_allclose(a, b, atol=1e-6 * float(scale))

  close(jnp.vdot(tx, v), jnp.vdot(x, winograd.input_transform_transposed(v, shape)),
        jnp.linalg.norm(tx) * jnp.linalg.norm(v))
  m = jax.random.normal(k1, v.shape)
  y = jax.random.normal(k2, shape)
  ty = winograd.output_transform_transposed(y)
  close(jnp.vdot(winograd.output_transform(m, shape), y), jnp.vdot(m, ty),
        jnp.linalg.norm(m) * jnp.linalg.norm(ty))


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match='3, 3, C, C_out'):
    winograd.conv3x3(jnp.ones((1, 4, 4, 2)), jnp.ones((5, 5, 2, 2)))
