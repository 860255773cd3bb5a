"""``nn.Dense`` on 2-D inputs, the layout XLA:CPU's kernel-gradient dot needs no copy for
(measurements: docs/performance.md)."""
from __future__ import annotations

import flax.linen as nn
import jax


class Dense(nn.Dense):
  """``nn.Dense`` (same parameters) applied to its input flattened to 2-D. For a (B, T, D)
  input XLA:CPU lays out the kernel gradient's dot with a transposed copy of the (B*T, F)
  output gradient (measured: ~12 % of a ViT-Tiny step); a 2-D dot needs no copy."""

  def __call__(self, inputs: jax.Array) -> jax.Array:
    lead = inputs.shape[:-1]
    y = super().__call__(inputs.reshape(-1, inputs.shape[-1]))
    return y.reshape(lead + (self.features,))
