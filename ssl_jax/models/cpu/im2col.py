"""A 2-D NHWC convolution as one im2col matmul (measurements: docs/performance.md).

The k x k shifted slices of the padded input go side by side, times the kernel as a
(k*k*C_in, C_out) matrix; its backward pass is slices, pads and matmuls. Grouped convolutions
(``feature_group_count`` g > 1) become one einsum over the g groups. Same sums of products as
``lax.conv_general_dilated``, in another order (float32 rounding).
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def conv(lhs, rhs, window_strides, padding, feature_group_count: int = 1, precision=None,
         preferred_element_type=None):
  """``lax.conv_general_dilated(lhs, rhs, window_strides, padding, dimension_numbers=('NHWC',
  'HWIO', 'NHWC'), feature_group_count=...)`` as im2col matmuls. ``padding``: explicit
  ((top, bottom), (left, right)), each >= 0; no dilation; the output must be non-empty (the
  caller, :func:`ssl_jax.models.cpu.conv.conv_general_dilated`, checks all three)."""
  g = feature_group_count
  kh, kw, cin, cout = rhs.shape          # cin: input channels per group
  (pt, pb), (pl, pr) = padding
  sh, sw = window_strides
  b, h, w, _ = lhs.shape
  ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
  xp = jnp.pad(lhs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  cols = [lax.slice(xp, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, g * cin),
                    (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]
  if g > 1:
    cols = jnp.stack(cols, axis=3).reshape(b, ho, wo, kh * kw, g, cin)
    out = jnp.einsum('bhwtgc,tcgo->bhwgo', cols, rhs.reshape(kh * kw, cin, g, cout // g),
                     precision=precision, preferred_element_type=preferred_element_type)
    return out.reshape(b, ho, wo, cout)
  cols = jnp.concatenate(cols, axis=-1).reshape(b * ho * wo, kh * kw * cin)
  out = jnp.dot(cols, rhs.reshape(kh * kw * cin, cout), precision=precision,
                preferred_element_type=preferred_element_type)
  return out.reshape(b, ho, wo, cout)
