"""The convolution kernel choice (ssl_jax.models.cpu.conv): which kernel 'auto' takes, the im2col
form against XLA's convolution, and the error for an unknown choice. The whole-network parity of
every ``conv_impl`` is tests/models/test_resnet.py's; Winograd's own tests: test_winograd.py."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.cpu import conv


def test_grouped_im2col_conv_matches_lax():
  """cpu.conv.conv_general_dilated's grouped im2col path (data2vec 2.0's decoder) equals
  lax.conv_general_dilated, for odd grids, strides, paddings and several group counts."""
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 5, 12))
  for groups, k, stride in ((4, 3, 1), (12, 1, 1), (3, 5, 1), (4, 3, 2), (2, 3, 1)):
    pad = [(k // 2,) * 2] * 2
    ref = nn.Conv(24, (k, k), stride, padding=pad, feature_group_count=groups)
    ours = nn.Conv(24, (k, k), stride, padding=pad, feature_group_count=groups,
                   conv_general_dilated=conv.conv_general_dilated)
    params = ref.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
    jaxpr = str(jax.make_jaxpr(lambda p: ours.apply(p, x))(params))
    assert 'conv_general_dilated' not in jaxpr   # the im2col form, not XLA's grouped conv


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason="'auto' picks Winograd on CPU only")
def test_auto_takes_winograd_for_enough_channels_and_tiles():
  """'auto' on CPU: Winograd for 3x3 stride-1 convolutions with >= 16 input channels and >= 256
  output tiles in the batch; im2col for the stem-like 3-channel and the small-batch small-map ones
  and for stride 2."""
  def uses_winograd(x_shape, w_shape, stride=1):
    fn = lambda x, w: conv.conv_general_dilated(
        x, w, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return 'custom_vjp_call' in str(jax.make_jaxpr(fn)(jnp.ones(x_shape), jnp.ones(w_shape)))
  assert uses_winograd((4, 16, 16, 16), (3, 3, 16, 8))           # 4 x 64 = 256 tiles
  assert not uses_winograd((4, 16, 16, 3), (3, 3, 3, 8))         # 3 input channels
  assert not uses_winograd((2, 8, 8, 16), (3, 3, 16, 8))         # 2 x 16 = 32 tiles
  assert not uses_winograd((4, 32, 32, 16), (3, 3, 16, 8), stride=2)


def test_bad_conv_impl_is_named():
  with pytest.raises(ValueError, match='im2col'):
    conv.conv_general_dilated(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), (1, 1),
                              ((1, 1), (1, 1)), impl='fft')
