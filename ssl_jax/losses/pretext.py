"""Pretext classification tasks: rotation, jigsaw, CutPaste, colorization, and the
uncertainty-weighted sum of several task losses (SiT)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def pretext_cross_entropy(logits, labels, weights=None):
  r"""Cross-entropy of a pretext classification task, shared by rotation prediction, jigsaw and
  CutPaste:

  * RotNet (Gidaris et al., "Unsupervised Representation Learning by Predicting Image Rotations",
    ICLR 2018, Eq. 1-2): the K = 4 rotations :math:`g(X|y)`, :math:`y \in \{0, 90, 180, 270\}`
    of every image, :math:`\mathcal{L} = -\frac{1}{K}\sum_y \log F^y(g(X|y))`;
  * Jigsaw (Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw
    Puzzles", ECCV 2016): the index of the permutation (out of a fixed set) applied to the tiles;
  * CutPaste (Li et al., "CutPaste: Self-Supervised Learning for Anomaly Detection and
    Localization", CVPR 2021, Eq. 1-2): 3-way {normal, CutPaste, CutPaste-scar}.

  .. math::
     \mathcal{L} = \frac{\sum_i w_i \, (-\log \operatorname{softmax}(\ell_i)_{y_i})}{\sum_i w_i}

  Args:
    logits: (N, C).
    labels: (N,) int class indices.
    weights: optional (N,) non-negative example weights (default 1).

  Returns:
    (loss, accuracy) with accuracy the (weighted) fraction of argmax hits.
  """
  logits = logits.astype(jnp.float32)
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_prob, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
  hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  if weights is None:
    return jnp.mean(nll), jnp.mean(hit)
  w = weights.astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(w), 1e-12)
  return jnp.sum(w * nll) / denom, jnp.sum(w * hit) / denom


def uncertainty_weighted_sum(task_losses, log_vars, classification=None):
  r"""Multi-task loss with learned homoscedastic-uncertainty weights.

  Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
  Geometry and Semantics", CVPR 2018, Eqs. 7 and 10 (as used by SiT, Atito et al. 2021,
  Sec. 3.4), with the numerically stable parametrisation :math:`s_i = \log \sigma_i^2`. A
  regression task (Gaussian likelihood, Eq. 7) enters as
  :math:`\frac{1}{2\sigma_i^2}\mathcal{L}_i + \log\sigma_i`, a classification task
  (softmax likelihood, Eq. 10) as :math:`\frac{1}{\sigma_i^2}\mathcal{L}_i + \log\sigma_i`:

  .. math::
     \mathcal{L} = \sum_i c_i e^{-s_i} \mathcal{L}_i + \tfrac12 s_i ,\qquad
     c_i = \tfrac12 \text{ (regression)},\; 1 \text{ (classification)}.

  For fixed :math:`\mathcal{L}_i` the minimiser is :math:`s_i = \log (2 c_i \mathcal{L}_i)`: a
  task with a larger loss gets a smaller weight :math:`c_i e^{-s_i}` (SiT's official code uses
  the classification form for its rotation and contrastive losses, the regression form for L1).

  Args:
    task_losses: (T,) the task losses.
    log_vars: (T,) the learned :math:`s_i`.
    classification: optional (T,) bools, True where task i is a classification (cross-entropy)
      loss; default all regression.

  Returns:
    (total, weights) with weights :math:`c_i e^{-s_i}` (T,), for logging.
  """
  task_losses = jnp.asarray(task_losses, jnp.float32)
  log_vars = jnp.asarray(log_vars, jnp.float32)
  if classification is None:
    coeff = jnp.full(task_losses.shape, 0.5, jnp.float32)
  else:
    classification = tuple(bool(x) for x in classification)
    if len(classification) != task_losses.shape[0]:
      raise ValueError(f'classification has {len(classification)} entries for '
                       f'{task_losses.shape[0]} task losses')
    coeff = jnp.asarray([1.0 if c else 0.5 for c in classification], jnp.float32)
  weights = coeff * jnp.exp(-log_vars)
  return jnp.sum(weights * task_losses + 0.5 * log_vars), weights


def colorization_rebalanced_ce(logits, soft_targets, pixel_weights):
  r"""Class-rebalanced multinomial cross-entropy of colorization.

  Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016, Eq. 2: with the soft-encoded
  ground truth :math:`Z_{h,w,q}` over the Q quantised ab bins, the predicted distribution
  :math:`\hat Z = \operatorname{softmax}(\text{logits})` and the rebalancing weight
  :math:`v(Z_{h,w}) = w_{q^*}`, :math:`q^* = \arg\max_q Z_{h,w,q}` (Eq. 3-4),

  .. math::
     \mathcal{L} = -\frac{1}{B H W} \sum_{b,h,w} v(Z_{b,h,w}) \sum_q Z_{b,h,w,q}
                   \log \hat Z_{b,h,w,q} .

  Args:
    logits: (B, H, W, Q).
    soft_targets: (B, H, W, Q), rows sum to 1.
    pixel_weights: (B, H, W) the weights v(Z).
  """
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  per_pixel = -jnp.sum(soft_targets.astype(jnp.float32) * log_p, axis=-1)
  return jnp.mean(pixel_weights.astype(jnp.float32) * per_pixel)
