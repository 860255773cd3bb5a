"""Which kernel runs a 2-D convolution: XLA's, im2col matmuls or Winograd F(2x2, 3x3).

A drop-in for ``lax.conv_general_dilated`` (flax's ``nn.Conv(conv_general_dilated=...)``) that
ResNet and the data2vec 2.0 decoder pass to their convolutions; ``impl`` is
``config.model.conv_impl``. The measurements behind the rules below: docs/performance.md
("ResNet convolutions as im2col matmuls on CPU", "Winograd F(2x2, 3x3)").
"""
from __future__ import annotations

import jax
from jax import lax

from ssl_jax.models.cpu import im2col, winograd

_NHWC = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ('NHWC', 'HWIO', 'NHWC'))

CONV_IMPLS = ('auto', 'im2col', 'xla', 'winograd')
# 'auto' on CPU: 3x3 stride-1 convolutions with at least this many input channels and 2x2 output
# tiles (batch x tiles per map) by Winograd.
WINOGRAD_MIN_CHANNELS = 16
WINOGRAD_MIN_TILES = 256


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, *,
                         impl: str = 'auto', **kwargs):
  """``lax.conv_general_dilated``, or the same sums of products as one im2col matmul
  (:func:`ssl_jax.models.cpu.im2col.conv`) for a 2-D NHWC convolution.

  ``impl``: ``'xla'`` keeps XLA's convolution, ``'im2col'`` takes the matmul form, ``'auto'``
  (the default) takes it on the CPU backend and otherwise only where XLA:CPU-style trouble is
  structural (below). Why on CPU: XLA:CPU's convolutions reach a fraction of its matmul speed on
  ResNet shapes (about 2x slower in all on a CIFAR-stem ResNet-18, ``benchmarks/conv_impl.py``).
  On GPU/TPU XLA's own convolutions are the fast path.

  ``'winograd'``: 3x3 stride-1 padding-1 dense convolutions by Winograd's F(2x2, 3x3)
  (:func:`ssl_jax.models.cpu.winograd.conv3x3`: 2.25x fewer matmul FLOPs, a 4x instead of 9x
  input expansion, a hand-written backward pass), every other one as im2col. ``'auto'`` on CPU
  does the same for those with at least ``WINOGRAD_MIN_CHANNELS`` (16) input channels and
  ``WINOGRAD_MIN_TILES`` (256) 2x2 output tiles in the batch, and keeps im2col for the
  3-channel stem (its 16 matmuls would have K = 3) and for small batches of small maps, where
  Winograd measured slower.

  Always im2col (any backend, unless ``impl='xla'``): a convolution whose input or output
  feature map has fewer pixels than the kernel window (a 3x3 convolution on the 2x2 maps of
  stage 4 for 16 px inputs, or a stride-2 one onto them): XLA's algebraic simplifier swaps its
  operands and XLA:CPU runs the swapped form with its generic loop emitter, tens of times slower
  than im2col; and grouped ones (``feature_group_count`` g > 1, e.g. data2vec 2.0's decoder),
  an order of magnitude slower than dense ones in XLA:CPU, as one einsum over the g groups."""
  if impl not in CONV_IMPLS:
    raise ValueError(f'conv impl must be one of {CONV_IMPLS}, got {impl!r}')
  def fallback():
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation,
                                    dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, precision=precision,
                                    **kwargs)
  g = feature_group_count
  if (lhs.ndim != 4 or rhs.ndim != 4
      or kwargs.get('batch_group_count', 1) != 1 or isinstance(padding, str)
      or any(d != 1 for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
      or not _is_nhwc(dimension_numbers)):
    return fallback()
  kh, kw, cin, _ = rhs.shape          # cin: input channels per group
  (pt, pb), (pl, pr) = padding
  sh, sw = window_strides
  b, h, w, _ = lhs.shape
  ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
  structural = g > 1 or min(h * w, ho * wo) < kh * kw
  cpu = jax.default_backend() == 'cpu'
  wanted = impl in ('im2col', 'winograd') or (impl == 'auto' and (structural or cpu))
  if not wanted or ho <= 0 or wo <= 0 or min(pt, pb, pl, pr) < 0:
    return fallback()
  if (g == 1 and (kh, kw, sh, sw, pt, pb, pl, pr) == (3, 3, 1, 1, 1, 1, 1, 1)
      and kwargs.get('preferred_element_type') is None
      and (impl == 'winograd' or (impl == 'auto' and cpu and cin >= WINOGRAD_MIN_CHANNELS
                                  and b * -(-ho // 2) * -(-wo // 2) >= WINOGRAD_MIN_TILES))):
    return winograd.conv3x3(lhs, rhs)
  return im2col.conv(lhs, rhs, window_strides, padding, feature_group_count=g,
                     precision=precision,
                     preferred_element_type=kwargs.get('preferred_element_type'))


def _is_nhwc(dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False
  try:
    return lax.conv_dimension_numbers((1,) * 4, (1,) * 4, dimension_numbers) == _NHWC
  except (TypeError, ValueError):
    return False
