"""Non-contrastive regression of one view onto the other: BYOL, SimSiam; I-JEPA in latent space."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.losses.common import l2_normalize


def normalized_mse(p, z):
  r"""BYOL's regression loss: mean squared error of L2-normalised vectors.

  Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, Eq. (2):

  .. math::
     \mathcal{L}_{\theta,\xi} = \lVert \bar q_\theta(z_\theta) - \bar z'_\xi \rVert_2^2
        = 2 - 2 \frac{\langle q_\theta(z_\theta), z'_\xi \rangle}
                     {\lVert q_\theta(z_\theta)\rVert_2 \, \lVert z'_\xi\rVert_2},

  averaged over the batch. BYOL symmetrises it (Eq. 2-3): the method adds the loss with the two
  views swapped. The caller stops the gradient of the target projection ``z``.

  Args:
    p: (N, D) online predictions; z: (N, D) target projections.
  """
  p, z = l2_normalize(p), l2_normalize(z)
  return jnp.mean(jnp.sum((p - z) ** 2, axis=-1))


def negative_cosine(p, z):
  r"""SimSiam's negative cosine similarity.

  Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, Eq. (1):

  .. math::
     \mathcal{D}(p_1, z_2) = -\frac{p_1}{\lVert p_1\rVert_2} \cdot \frac{z_2}{\lVert z_2\rVert_2},

  averaged over the batch; the symmetric loss (Eq. 2-3) is
  :math:`\mathcal{L} = \tfrac12 \mathcal{D}(p_1, \mathrm{stopgrad}(z_2)) +
  \tfrac12 \mathcal{D}(p_2, \mathrm{stopgrad}(z_1))`, assembled by the method, which applies the
  stop-gradient.
  """
  p, z = l2_normalize(p), l2_normalize(z)
  return -jnp.mean(jnp.sum(p * z, axis=-1))


IJEPA_LOSSES = ('smooth_l1', 'l2')


def ijepa_loss(pred, target, kind: str = 'smooth_l1', beta: float = 1.0):
  r"""I-JEPA's prediction loss, averaged over target patches, blocks and the batch.

  Assran et al., "Self-Supervised Learning from Images with a Joint-Embedding Predictive
  Architecture", CVPR 2023, Eq. (1): for M target blocks :math:`B_i` of predictions
  :math:`\hat s_{y_j}` and target-encoder outputs :math:`s_{y_j}` (layer-normed per token),

  .. math::
     \mathcal{L} = \frac{1}{M} \sum_{i=1}^{M} \sum_{j \in B_i}
                   \lVert \hat s_{y_j} - s_{y_j} \rVert_2^2 .

  ``kind='l2'`` is that squared distance, ``kind='smooth_l1'`` (the default) what the official
  code trains with (facebookresearch/ijepa, src/train.py: ``F.smooth_l1_loss(z, h)``, beta 1):
  per element :math:`\tfrac12 d^2 / \beta` for :math:`|d| < \beta`, else :math:`|d| - \tfrac12
  \beta`. Both are the mean over every element (the official ``reduction='mean'``), i.e. the
  paper's sum per token divided by D and by the tokens per block, so its learning rates carry
  over. On layer-normed targets most :math:`|d| < 1`, where smooth-L1 is half the L2.

  Args:
    pred, target: (..., K, D) predictions and targets (the caller stops the target's gradient).
  """
  d = pred.astype(jnp.float32) - target.astype(jnp.float32)
  if kind == 'l2':
    return jnp.mean(d ** 2)
  if kind == 'smooth_l1':
    a = jnp.abs(d)
    return jnp.mean(jnp.where(a < beta, 0.5 * d ** 2 / beta, a - 0.5 * beta))
  raise ValueError(f'I-JEPA loss kind={kind!r} is not one of {IJEPA_LOSSES}')
