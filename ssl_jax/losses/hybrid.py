"""Objectives that add two families: CMAE (masked reconstruction + contrastive)."""
from __future__ import annotations

import jax

from ssl_jax.losses.contrastive import moco_v3_contrastive
from ssl_jax.losses.masked import mae_loss


def cmae_loss(pred_pixels, target_patches, mask, prediction, target_projection,
              temperature: float = 0.07, contrastive_weight: float = 1.0,
              norm_pix_loss: bool = True):
  r"""CMAE's objective: MAE reconstruction plus an InfoNCE between the online branch's prediction
  and the momentum branch's projection.

  Huang et al., "Contrastive Masked Autoencoders are Stronger Vision Learners", TPAMI 2023
  (arXiv 2207.13532), Sec. 3: :math:`\mathcal{L} = \mathcal{L}_r + \lambda_c \mathcal{L}_c`.

  * :math:`\mathcal{L}_r` is :func:`mae_loss`: the mean squared error on the masked patches
    (:math:`m_{bn} = 1`) of the *source* view, against per-patch normalised pixels when
    ``norm_pix_loss``,

    .. math::
       \mathcal{L}_r = \frac{\sum_{b,n} m_{bn} \, \tfrac{1}{p^2 C}\lVert y_{bn} - \hat x_{bn}\rVert^2}
                            {\sum_{b,n} m_{bn}} .

  * :math:`\mathcal{L}_c` is the InfoNCE of the online prediction :math:`q_i` (feature decoder ->
    mean pool -> projector -> predictor) against the momentum projection :math:`k_i` of the
    shifted, colour-augmented target view of the same image, the other N - 1 projections of the
    *global* batch being the negatives; both are L2-normalised and :math:`k` carries no gradient:

    .. math::
       \mathcal{L}_c = 2\tau \cdot \frac{1}{N} \sum_{i=1}^{N}
          -\log \frac{\exp(\bar q_i \cdot \bar k_i / \tau)}
                     {\sum_{j=1}^{N} \exp(\bar q_i \cdot \bar k_j / \tau)} .

    The :math:`2\tau` factor is the official code's (``CMAEPretrainHead``: ``2 * t *
    CrossEntropyLoss(score, label)``, taken from MoCo v3), i.e. :func:`moco_v3_contrastive`.

  Args:
    pred_pixels: (B, N, p*p*C) pixel-decoder output for every patch.
    target_patches: (B, N, p*p*C) patchified source image (normalised here if norm_pix_loss).
    mask: (B, N), 1 = masked.
    prediction: (B, D) online predictor output.
    target_projection: (B, D) momentum projection (its gradient is stopped here).
    temperature: tau (0.07 in the paper).
    contrastive_weight: lambda_c (the official configs' ``ct_weight = 1.0``).
    norm_pix_loss: per-patch normalised pixel targets (True in the paper).

  Returns:
    (loss, {'loss_recon', 'loss_contrastive', 'contrastive_acc'}); loss = loss_recon +
    contrastive_weight * loss_contrastive.
  """
  rec = mae_loss(pred_pixels, target_patches, mask, norm_pix_loss)
  con, acc = moco_v3_contrastive(prediction, jax.lax.stop_gradient(target_projection),
                                 temperature)
  total = rec + contrastive_weight * con
  return total, {'loss_recon': rec, 'loss_contrastive': con, 'contrastive_acc': acc}
