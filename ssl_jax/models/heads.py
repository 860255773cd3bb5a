"""Projection / prediction heads shared by the joint-embedding methods.

``MLP`` covers the SimCLR projector (Chen et al. 2020: Linear-BN-ReLU-Linear), the BYOL/SimSiam
projector and predictor (Grill et al. 2020; Chen & He 2021) and the MoCo v3 heads (Chen et al.
2021: BN after the last layer without affine parameters).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ssl_jax.models.cpu.gelu import gelu
from ssl_jax.models.norm import BatchNorm


class MLP(nn.Module):
  """Dense -> [BN] -> ReLU repeated for ``hidden_dims``, then Dense(out_dim) -> [BN].

  Attributes:
    hidden_dims: widths of the hidden layers (empty: a single linear layer).
    out_dim: output width.
    use_bn: BatchNorm after each hidden layer (then hidden Dense layers have no bias).
    last_bn: BatchNorm after the output layer (SimSiam, MoCo v3, Barlow Twins).
    last_bn_affine: whether that last BatchNorm has learned scale/bias (MoCo v3 uses False).
  """
  hidden_dims: Sequence[int]
  out_dim: int
  use_bn: bool = True
  last_bn: bool = False
  last_bn_affine: bool = True
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = lambda name, affine=True: BatchNorm(
        use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
        use_scale=affine, use_bias=affine, dtype=self.dtype, name=name)
    for i, h in enumerate(self.hidden_dims):
      x = nn.Dense(h, use_bias=not self.use_bn, dtype=self.dtype, name=f'fc{i}')(x)
      if self.use_bn:
        x = norm(f'bn{i}')(x)
      x = nn.relu(x)
    x = nn.Dense(self.out_dim, use_bias=not self.last_bn, dtype=self.dtype,
                 name=f'fc{len(self.hidden_dims)}')(x)
    if self.last_bn:
      x = norm(f'bn{len(self.hidden_dims)}', affine=self.last_bn_affine)(x)
    return x.astype(jnp.float32)


class DINOHead(nn.Module):
  """DINO projection head (Caron et al. 2021, Sec. 3.1 and App. C; the official ``DINOHead``).

  ``num_layers - 1`` Dense+GELU layers of width ``hidden_dim``, a Dense to ``bottleneck_dim``,
  L2 normalisation, then a weight-normalised linear layer without bias to ``out_dim``:
  ``W = g * V / ||V||`` column-wise (PyTorch ``weight_norm(dim=0)``). With ``norm_last_layer``
  the gain ``g`` is fixed to 1 (no ``last_layer_g`` parameter), as DINO's default.

  iBOT (Zhou et al. 2022, ``iBOTHead``): with ``patch_out_dim > 0`` and a (B, T, D) token input,
  the MLP is shared, token 0 ([CLS]) goes through ``last_layer`` and tokens 1: through a
  separate ``last_layer2`` of width ``patch_out_dim``; otherwise one last layer serves every
  input (the shared head). Returns float32 logits.

  ``use_bn`` (the official ``use_bn_in_head``): BatchNorm after each hidden Dense, before the
  GELU (momentum 0.9 = PyTorch's 0.1, eps 1e-5); statistics over the batch (and tokens).
  """
  out_dim: int
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  num_layers: int = 3
  norm_last_layer: bool = True
  patch_out_dim: int = 0
  use_bn: bool = False
  dtype: Any = jnp.float32

  def _last_layer(self, x, out_dim, name):
    v = self.param(f'{name}_v', nn.initializers.lecun_normal(), (x.shape[-1], out_dim))
    w = v / jnp.maximum(jnp.linalg.norm(v, axis=0, keepdims=True), 1e-12)
    if not self.norm_last_layer:
      w = w * self.param(f'{name}_g', nn.initializers.ones, (out_dim,))[None]
    return jnp.dot(x, w.astype(x.dtype))

  @nn.compact
  def __call__(self, x, train: bool = False):
    dense = lambda width, name: nn.Dense(
        width, kernel_init=nn.initializers.truncated_normal(0.02),
        bias_init=nn.initializers.zeros, dtype=self.dtype, name=name)
    for i in range(self.num_layers - 1):
      x = dense(self.hidden_dim, f'fc{i}')(x)
      if self.use_bn:
        x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=self.dtype, name=f'bn{i}')(x)
      x = gelu(x)
    x = dense(self.bottleneck_dim, f'fc{self.num_layers - 1}')(x).astype(jnp.float32)
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    if self.patch_out_dim and x.ndim == 3:
      cls = self._last_layer(x[:, :1], self.out_dim, 'last_layer')
      patches = self._last_layer(x[:, 1:], self.patch_out_dim, 'last_layer2')
      return cls.astype(jnp.float32), patches.astype(jnp.float32)
    return self._last_layer(x, self.out_dim, 'last_layer').astype(jnp.float32)
