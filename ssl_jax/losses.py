"""Self-supervised losses as pure functions of arrays.

Every function here is jittable, takes global-batch arrays (under ``jax.jit`` with a sharded batch
the reductions are global, so negatives come from every device), and documents the formula of the
paper it implements. No parameters, no state.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x, axis=-1, eps=1e-12):
  """x / max(||x||_2, eps) along ``axis`` (the normalisation used by torch.nn.functional.normalize)."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


def nt_xent(z1, z2, temperature: float = 0.1):
  r"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

  Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020,
  Eq. (1). With the 2N projections :math:`z` of N images under two views, cosine similarity
  :math:`s_{i,j} = z_i^\top z_j / (\lVert z_i\rVert \lVert z_j\rVert)` and positive pair
  :math:`(i, j(i))`,

  .. math::
     \ell_{i} = -\log \frac{\exp(s_{i,j(i)}/\tau)}{\sum_{k=1}^{2N} \mathbb{1}_{[k \ne i]}
                \exp(s_{i,k}/\tau)}, \qquad
     \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i .

  Args:
    z1, z2: (N, D) projections of the two views; row n of z1 and of z2 come from the same image.
    temperature: tau.

  Returns:
    (loss, accuracy) where accuracy is the fraction of anchors whose positive has the highest
    similarity among the 2N - 1 candidates (a cheap health metric).
  """
  n = z1.shape[0]
  z = l2_normalize(jnp.concatenate([z1, z2], axis=0))
  logits = (z @ z.T) / temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
  positives = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(0, n)])
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  loss = -jnp.mean(jnp.take_along_axis(log_prob, positives[:, None], axis=-1))
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == positives)
  return loss, accuracy
