"""Latent predictors of the joint-embedding predictive methods (flax.linen modules only).

* :class:`JEPAPredictor` — I-JEPA's narrow predictor ViT (Assran et al., "Self-Supervised Learning
  from Images with a Joint-Embedding Predictive Architecture", CVPR 2023, Sec. 3 "Prediction"):
  the context encoder's tokens, projected to the predictor width, plus one shared mask token per
  target patch, each carrying the fixed 2-D sin-cos position embedding of its patch; the
  predictor's outputs at the mask tokens, projected back to the encoder width, are the
  predictions. Names follow the official ``VisionTransformerPredictor``
  (facebookresearch/ijepa, src/models/vision_transformer.py): ``predictor_embed``,
  ``mask_token``, ``predictor_blocks_{i}``, ``predictor_norm``, ``predictor_proj``.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.cpu.dense import Dense
from ssl_jax.models.vit import Block, sincos_2d_pos_embed

Array = jax.Array

_dense_init = nn.initializers.xavier_uniform()
_token_init = nn.initializers.truncated_normal(stddev=0.02)


class JEPAPredictor(nn.Module):
  """I-JEPA predictor (Assran et al. 2023): predicts the target patches' representations from the
  context tokens and the targets' positions.

  Attributes:
    grid: the patch grid side (the position embedding covers grid * grid patches).
    out_dim: the encoder width D (input and output width).
    embed_dim, depth, num_heads: the predictor's width, depth and heads (the paper: 384, 12, 12
      for ViT-H/14; 6 layers for ViT-B and ViT-L in its ablations).
  """
  grid: int
  out_dim: int
  embed_dim: int = 384
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, context: Array, context_ids: Array, target_ids: Array) -> Array:
    """context (B, Kc, D) encoder tokens at patches ``context_ids`` (B, Kc); returns the
    (B, Kt, D) predictions at patches ``target_ids`` (B, Kt)."""
    d = self.embed_dim
    pos = jnp.asarray(sincos_2d_pos_embed(d, self.grid))        # fixed, (N, d)
    x = Dense(d, kernel_init=_dense_init, bias_init=nn.initializers.zeros, dtype=self.dtype,
              name='predictor_embed')(context)
    x = x + pos[context_ids].astype(x.dtype)
    mask_token = self.param('mask_token', _token_init, (1, 1, d))
    queries = mask_token.astype(x.dtype) + pos[target_ids].astype(x.dtype)
    h = jnp.concatenate([x, queries], axis=1)
    for i in range(self.depth):
      h = Block(d, self.num_heads, self.mlp_ratio, dtype=self.dtype,
                name=f'predictor_blocks_{i}')(h)
    h = nn.LayerNorm(1e-6, dtype=jnp.float32, name='predictor_norm')(h)
    h = h[:, context.shape[1]:]
    return Dense(self.out_dim, kernel_init=_dense_init, bias_init=nn.initializers.zeros,
                 dtype=jnp.float32, name='predictor_proj')(h)
