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
import jax.numpy as jnp

from ssl_jax.models.cpu import conv as cpu_conv
from ssl_jax.models.norm import BatchNorm

ModuleDef = Any

# Kaiming-normal fan_out (torchvision's ResNet initialisation).
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# ``conv_impl`` picks each convolution's kernel (XLA's, im2col matmuls or Winograd; same parameters,
# same results) in models/cpu/conv.py; these are its choices (``config.model.conv_impl``).
CONV_IMPLS = cpu_conv.CONV_IMPLS


def _conv(features: int, kernel: int, stride: int, name: str, dtype,
          impl: str = 'auto') -> nn.Conv:
  """A bias-free k x k convolution with torchvision's padding k // 2 and Kaiming fan-out init,
  through :func:`ssl_jax.models.cpu.conv.conv_general_dilated` with ``impl`` (every
  convolution of the ResNet goes through here)."""
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=[(kernel // 2,) * 2] * 2,
                 use_bias=False, kernel_init=conv_init, dtype=dtype,
                 conv_general_dilated=functools.partial(cpu_conv.conv_general_dilated, impl=impl),
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
      (:func:`ssl_jax.models.cpu.conv.conv_general_dilated`; the parameters and results are
      the same).
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
