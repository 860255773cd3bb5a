"""Barlow Twins (Zbontar, Jing, Misra, LeCun & Deny, "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction", ICML 2021).

Two augmented views (BYOL's asymmetric recipes) go through one backbone call and a projector
(Linear-BN-ReLU x (L-1), Linear); the loss (``losses.barlow_twins``) standardises every embedding
dimension over the *global* batch and pushes the cross-correlation matrix of the two views towards
the identity: ``sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2``. No negatives, no target
network, no predictor. Both views share one backbone call, so BatchNorm spans all 2N views.

Config (``config.method``): lambd, proj_hidden_dim, proj_dim, proj_layers.
"""
from __future__ import annotations

import dataclasses

from ssl_jax import losses
from ssl_jax.methods.contrastive.projected import ProjectedPair


class BarlowTwins(ProjectedPair):
  """Barlow Twins with the cross-correlation computed over the global batch."""

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(ProjectedPair.Hparams):
    lambd: float

  def __init__(self, config):
    super().__init__(config)
    self.lambd = self.hp.lambd

  def pair_loss(self, z1, z2):
    return losses.barlow_twins(z1, z2, self.lambd)
