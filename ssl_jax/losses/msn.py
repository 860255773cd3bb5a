"""Masked Siamese Networks' prototype loss: MSN (uniform prior) and PMSN (power-law prior)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.losses.clustering import sinkhorn_knopp
from ssl_jax.losses.common import l2_normalize


def prototype_probabilities(z, prototypes, temperature: float):
  r""":math:`p = \mathrm{softmax}(\hat z \hat C^\top / \tau)` with L2-normalised embeddings and
  prototypes (MSN Eq. (1), the official ``snn`` with one-hot prototype labels). (N, K)."""
  logits = l2_normalize(z.astype(jnp.float32)) @ l2_normalize(prototypes.astype(jnp.float32)).T
  return jax.nn.softmax(logits / temperature, axis=-1)


def sharpen(p, temperature: float):
  r"""Target sharpening :math:`\rho(p)_k = p_k^{1/T} / \sum_j p_j^{1/T}` (MSN Sec. 3). On
  ``prototype_probabilities`` at temperature tau this is the softmax at tau * T (0.1 * 0.25 =
  0.025, the paper's target temperature)."""
  return jax.nn.softmax(jnp.log(jnp.maximum(p, 1e-30)) / temperature, axis=-1)


def power_law_prior(num_prototypes: int, exponent: float):
  r"""PMSN's prior :math:`\pi_k \propto k^{-\tau}`, k = 1..K (Mo et al. 2023; lightly's
  ``_power_law_distribution``, tau = 0.25 by default). (K,) summing to 1."""
  k = np.arange(1, num_prototypes + 1, dtype=np.float64)
  p = k ** (-exponent)
  return jnp.asarray(p / p.sum(), jnp.float32)


def msn_regularizer(mean_probs, prior=None):
  r"""The regulariser on the batch-mean anchor prediction :math:`\bar p`:

  * ``prior=None`` (MSN's mean-entropy maximisation, ME-MAX):
    :math:`\sum_k \bar p_k \log \bar p_k + \log K = \log K - H(\bar p) = KL(\bar p \| U)`, as the
    official ``rloss`` (0 for a uniform :math:`\bar p`);
  * ``prior`` (K,) (PMSN): :math:`KL(\pi \| \bar p) = \sum_k \pi_k (\log \pi_k - \log \bar p_k)`,
    as lightly's ``F.kl_div(log p_bar, prior, reduction='sum')`` (0 for :math:`\bar p = \pi`).
  """
  log_p = jnp.log(jnp.maximum(mean_probs, 1e-30))
  if prior is None:
    return jnp.sum(mean_probs * log_p) + jnp.log(float(mean_probs.shape[-1]))
  return jnp.sum(prior * (jnp.log(jnp.maximum(prior, 1e-30)) - log_p))


def msn_loss(anchors, targets, prototypes, *, temperature: float = 0.1,
             sharpen_temperature: float = 0.25, reg_weight: float = 1.0, prior=None,
             entropy_weight: float = 0.0, sinkhorn_iterations: int = 0):
  r"""MSN objective (Assran et al., "Masked Siamese Networks for Label-Efficient Learning",
  ECCV 2022, Eq. (2)-(3); official ``init_msn_loss``) and PMSN's (Mo et al. 2023):

  .. math::
     \mathcal{L} = \frac{1}{V B} \sum_{v, b} H(\rho(p^+_b), p_{v,b})
                 + \lambda\, R(\bar p) + \lambda_{ent} \frac{1}{VB}\sum_{v,b} H(p_{v,b}),

  with :math:`p_{v,b}` = ``prototype_probabilities(anchors, C, tau)`` of the V masked anchor
  views, :math:`p^+_b` the same of the (unmasked, EMA) target view, sharpened by ``sharpen`` at
  T and, with ``sinkhorn_iterations > 0``, balanced by Sinkhorn-Knopp (the official
  ``use_sinkhorn``), all without gradient; :math:`\bar p` the anchors' mean over the *global*
  batch and the views; R = ``msn_regularizer`` (ME-MAX, or PMSN's KL to ``prior``). The last term
  is the official ``ent_weight`` term (default 0): it makes each anchor prediction confident.

  Args:
    anchors: (V * B, D) anchor embeddings, view-major (view 0's batch first).
    targets: (B, D) target embeddings.
    prototypes: (K, D).
    temperature: tau (0.1).
    sharpen_temperature: T (0.25).
    reg_weight: lambda (1).
    prior: None (ME-MAX) or (K,) prior (PMSN).
    entropy_weight: lambda_ent (0).
    sinkhorn_iterations: 0 = no Sinkhorn on the targets.

  Returns:
    (loss, aux) with aux = {'cross_entropy', 'regularizer', 'anchor_entropy', 'target_max'}.
  """
  b = targets.shape[0]
  if anchors.shape[0] % b:
    raise ValueError(f'msn_loss: {anchors.shape[0]} anchors are not a whole number of views of '
                     f'the {b} targets')
  probs = prototype_probabilities(anchors, prototypes, temperature)
  t = sharpen(prototype_probabilities(targets, prototypes, temperature), sharpen_temperature)
  if sinkhorn_iterations:
    t = sinkhorn_knopp(jnp.log(jnp.maximum(t, 1e-30)), epsilon=1.0,
                       iterations=sinkhorn_iterations)
  t = jax.lax.stop_gradient(t)
  t = jnp.tile(t, (anchors.shape[0] // b, 1))
  log_p = jnp.log(jnp.maximum(probs, 1e-30))
  ce = -jnp.mean(jnp.sum(t * log_p, axis=-1))
  reg = msn_regularizer(jnp.mean(probs, axis=0), prior)
  ent = -jnp.mean(jnp.sum(probs * log_p, axis=-1))
  loss = ce + reg_weight * reg + entropy_weight * ent
  return loss, {'cross_entropy': ce, 'regularizer': reg, 'anchor_entropy': ent,
                'target_max': jnp.mean(jnp.max(t, axis=-1))}
