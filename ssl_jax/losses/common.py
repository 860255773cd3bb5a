"""Pieces every loss family uses."""
from __future__ import annotations

import jax.numpy as jnp


def l2_normalize(x, axis=-1, eps=1e-12):
  """x / max(||x||_2, eps) along ``axis`` (the normalisation used by torch.nn.functional.normalize)."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)
