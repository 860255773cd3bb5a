"""Non-contrastive regression of one view onto the other: BYOL, SimSiam."""
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
