"""SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020).

Two augmented views of every image go through the backbone and an MLP projector
(Linear-BN-ReLU-Linear); the NT-Xent loss (``losses.nt_xent``) treats the other view of the same
image as the positive and the other 2N - 2 views of the *global* batch as negatives. Both views
share one backbone call, so BatchNorm statistics span the whole global batch of 2N views.

Config (``config.method``): temperature, proj_hidden_dim, proj_dim, proj_layers.
"""
from __future__ import annotations

import dataclasses

from ssl_jax import losses
from ssl_jax.methods.contrastive.projected import ProjectedPair


class SimCLR(ProjectedPair):
  """SimCLR with a 2-view NT-Xent loss over the global batch."""

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(ProjectedPair.Hparams):
    temperature: float

  def __init__(self, config):
    super().__init__(config)
    self.temperature = self.hp.temperature

  def pair_loss(self, z1, z2):
    loss, acc = losses.nt_xent(z1, z2, self.temperature)
    return loss, {'contrastive_acc': acc}
