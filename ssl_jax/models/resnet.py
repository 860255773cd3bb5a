"""ResNet-18/50 backbones (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

Flax linen, NHWC. Module names follow torchvision/timm (``conv1``, ``bn1``, ``layer1_0/conv1``,
``layer1_0/downsample_0``...) so that export to PyTorch is a name-for-name mapping.

BatchNorm: under ``jax.jit`` with a batch sharded over a mesh the batch mean is a global mean,
so BatchNorm is synchronised across devices without any hand-written collective.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ssl_jax.models import winograd
from ssl_jax.models.norm import BatchNorm

ModuleDef = Any

# Kaiming-normal fan_out (torchvision's ResNet initialisation).
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

_NHWC = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ('NHWC', 'HWIO', 'NHWC'))


CONV_IMPLS = ('auto', 'im2col', 'xla', 'winograd')
# 'auto' on CPU: 3x3 stride-1 convolutions with at least this many input channels and 2x2 output
# tiles (batch x tiles per map) by Winograd.
WINOGRAD_MIN_CHANNELS = 16
WINOGRAD_MIN_TILES = 256


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, *,
                         impl: str = 'auto', **kwargs):
  """``lax.conv_general_dilated``, or the same sums of products as one im2col matmul (k x k
  shifted slices of the padded input side by side, times the kernel as a (k*k*C_in, C_out)
  matrix; its backward pass is slices, pads and matmuls) for a 2-D NHWC convolution.

  ``impl``: ``'xla'`` keeps XLA's convolution, ``'im2col'`` takes the matmul form, ``'auto'``
  (the default) takes it on the CPU backend and otherwise only where XLA:CPU-style trouble is
  structural (below). Why on CPU: XLA:CPU's convolutions reach a fraction of its matmul speed on
  ResNet shapes: one forward + backward of each of the 9 distinct convolution shapes of a
  CIFAR-stem ResNet-18 at batch 64 on a 2-core CPU takes 1.77 s as XLA convolutions and 0.89 s
  as im2col matmuls (the 3x3 64 -> 64 one on 32 x 32 maps: 940 vs 250 ms; no shape slower by
  more than the noise; ``benchmarks/conv_impl.py``). On GPU/TPU XLA's own convolutions are the
  fast path.

  ``'winograd'``: 3x3 stride-1 padding-1 dense convolutions by Winograd's F(2x2, 3x3)
  (:func:`ssl_jax.models.winograd.conv3x3`: 2.25x fewer matmul FLOPs, a 4x instead of 9x
  input expansion, a hand-written backward pass), every other one as im2col. ``'auto'`` on CPU
  does the same for those with at least ``WINOGRAD_MIN_CHANNELS`` (16) input channels and
  ``WINOGRAD_MIN_TILES`` (256) 2x2 output tiles in the batch, and keeps im2col for the
  3-channel stem (its 16 matmuls would have K = 3: 70 vs 20 ms at batch 64) and for small
  batches of small maps (batch 8: 4 x 4 maps 70 vs 18 ms, 32 tiles; 8 x 8 23 vs 17, 128). At
  batch 64 forward + backward, im2col vs Winograd: 3x3 64 -> 64 on 32 x 32 maps 265 vs 221 ms,
  128 on 16 x 16 208 vs 154, 256 on 8 x 8 177 vs 128, 512 on 4 x 4 171 vs 160; a SimCLR
  ResNet-18 step at batch 128 13.3 / 14.3 s -> 11.2 / 12.3 s (two alternating rounds).

  Always im2col (any backend, unless ``impl='xla'``): a convolution whose input or output
  feature map has fewer pixels than the kernel window (a 3x3 convolution on the 2x2 maps of
  stage 4 for 16 px inputs, or a stride-2 one onto them): XLA's algebraic simplifier swaps its
  operands and XLA:CPU runs the swapped form with its generic loop emitter, 3.2 s for one 3x3
  512 -> 512 convolution on a (192, 2, 2, 512) input, 67x slower than im2col; and grouped ones
  (``feature_group_count`` g > 1, e.g. data2vec 2.0's decoder), ~16-25x slower than dense ones
  in XLA:CPU, as one einsum over the g groups."""
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
  kh, kw, cin, cout = rhs.shape          # cin: input channels per group
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
  xp = jnp.pad(lhs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  cols = [lax.slice(xp, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, g * cin),
                    (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]
  if g > 1:
    cols = jnp.stack(cols, axis=3).reshape(b, ho, wo, kh * kw, g, cin)
    out = jnp.einsum('bhwtgc,tcgo->bhwgo', cols, rhs.reshape(kh * kw, cin, g, cout // g),
                     precision=precision,
                     preferred_element_type=kwargs.get('preferred_element_type'))
    return out.reshape(b, ho, wo, cout)
  cols = jnp.concatenate(cols, axis=-1).reshape(b * ho * wo, kh * kw * cin)
  out = jnp.dot(cols, rhs.reshape(kh * kw * cin, cout), precision=precision,
                preferred_element_type=kwargs.get('preferred_element_type'))
  return out.reshape(b, ho, wo, cout)


def _is_nhwc(dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False
  try:
    return lax.conv_dimension_numbers((1,) * 4, (1,) * 4, dimension_numbers) == _NHWC
  except (TypeError, ValueError):
    return False


def _conv(features: int, kernel: int, stride: int, name: str, dtype,
          impl: str = 'auto') -> nn.Conv:
  """A bias-free k x k convolution with torchvision's padding k // 2 and Kaiming fan-out init,
  through :func:`conv_general_dilated` with ``impl`` (every convolution of the ResNet goes
  through here)."""
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=[(kernel // 2,) * 2] * 2,
                 use_bias=False, kernel_init=conv_init, dtype=dtype,
                 conv_general_dilated=functools.partial(conv_general_dilated, impl=impl),
                 name=name)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut. Expansion 1."""
  features: int
  strides: int = 1
  norm: ModuleDef = BatchNorm
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'
  expansion = 1

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(_conv, dtype=self.dtype, impl=self.conv_impl)
    residual = x
    y = conv(self.features, 3, self.strides, 'conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = conv(self.features, 3, 1, 'conv2')(y)
    y = self.norm(name='bn2', scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = conv(self.features, 1, self.strides, 'downsample_0')(residual)
      residual = self.norm(name='downsample_1')(residual)
    return nn.relu(residual + y)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 -> 1x1 bottleneck block (stride on the 3x3, as torchvision v1.5). Expansion 4."""
  features: int
  strides: int = 1
  norm: ModuleDef = BatchNorm
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'
  expansion = 4

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(_conv, dtype=self.dtype, impl=self.conv_impl)
    residual = x
    y = nn.relu(self.norm(name='bn1')(conv(self.features, 1, 1, 'conv1')(x)))
    y = nn.relu(self.norm(name='bn2')(conv(self.features, 3, self.strides, 'conv2')(y)))
    y = conv(self.features * 4, 1, 1, 'conv3')(y)
    y = self.norm(name='bn3', scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = conv(self.features * 4, 1, self.strides, 'downsample_0')(residual)
      residual = self.norm(name='downsample_1')(residual)
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """ResNet trunk returning globally average-pooled features (B, C).

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block: BasicBlock or Bottleneck.
    width: channels of the first stage (64 in the paper; smaller for tiny test models).
    cifar_stem: 3x3 stride-1 stem without max-pool (SimCLR's CIFAR variant) instead of 7x7/2 + pool.
    bn_momentum: running-average decay of the BatchNorm statistics (PyTorch's 0.1 == 0.9 here).
    conv_impl: 'auto' | 'im2col' | 'xla' | 'winograd', how the convolutions run
      (:func:`conv_general_dilated`; the parameters and results are the same).
  """
  stage_sizes: Sequence[int]
  block: Callable = BasicBlock
  width: int = 64
  cifar_stem: bool = False
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @property
  def feature_dim(self) -> int:
    return self.width * 8 * self.block.expansion

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = lambda **kw: BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                  epsilon=1e-5, dtype=self.dtype, **kw)
    x = x.astype(self.dtype)
    if self.cifar_stem:
      x = _conv(self.width, 3, 1, 'conv1', self.dtype, self.conv_impl)(x)
      x = nn.relu(norm(name='bn1')(x))
    else:
      x = _conv(self.width, 7, 2, 'conv1', self.dtype, self.conv_impl)(x)
      x = nn.relu(norm(name='bn1')(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=[(1, 1), (1, 1)])
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block(self.width * 2**i, strides=strides, norm=norm, dtype=self.dtype,
                       conv_impl=self.conv_impl, name=f'layer{i + 1}_{j}')(x)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


def resnet18(stage_sizes=(2, 2, 2, 2), **kw) -> ResNet:
  return ResNet(stage_sizes=stage_sizes, block=BasicBlock, **kw)


def resnet50(stage_sizes=(3, 4, 6, 3), **kw) -> ResNet:
  return ResNet(stage_sizes=stage_sizes, block=Bottleneck, **kw)
