"""VICReg (Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022).

Two augmented views (BYOL's asymmetric recipes) go through one backbone call and an expander
(Linear-BN-ReLU x (L-1), Linear). The loss (``losses.vicreg``) is a weighted sum of an invariance
MSE between the two embeddings, a hinge keeping every dimension's standard deviation above 1
(variance) and the squared off-diagonal covariances (covariance), all over the *global* batch.

Config (``config.method``): sim_coeff, std_coeff, cov_coeff (defaults 25 / 25 / 1), proj_hidden_dim,
proj_dim, proj_layers.
"""
from __future__ import annotations

import dataclasses

from ssl_jax import losses
from ssl_jax.methods.contrastive.projected import ProjectedPair


class VICReg(ProjectedPair):
  """VICReg with configurable invariance / variance / covariance weights."""

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(ProjectedPair.Hparams):
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.coeffs = dict(sim_coeff=m.sim_coeff, std_coeff=m.std_coeff, cov_coeff=m.cov_coeff)

  def pair_loss(self, z1, z2):
    return losses.vicreg(z1, z2, **self.coeffs)
