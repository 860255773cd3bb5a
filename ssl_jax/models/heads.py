"""Projection / prediction heads shared by the joint-embedding methods.

``MLP`` covers the SimCLR projector (Chen et al. 2020: Linear-BN-ReLU-Linear), the BYOL/SimSiam
projector and predictor (Grill et al. 2020; Chen & He 2021) and the MoCo v3 heads (Chen et al.
2021: BN after the last layer without affine parameters).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


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
    norm = lambda name, affine=True: nn.BatchNorm(
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
