"""BYOL (Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020).

An online network (backbone -> projector -> predictor) predicts the projection that a target
network (backbone -> projector, an EMA of the online weights) gives of the other view. The loss is
the normalised MSE (``losses.normalized_mse``, Eq. 2), symmetrised over the two views (Eq. 3):

    L = || p1_hat - sg(z2'_hat) ||^2 + || p2_hat - sg(z1'_hat) ||^2      (batch mean of each)

The target momentum follows the cosine schedule tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2
(0.996 -> 1), a pure function of the step (``teacher.momentum_schedule``), applied in
``after_update`` by ``teacher.update`` (``buffers['teacher']``). The views are asymmetric
(``aug.recipe = ('byol_view1', 'byol_view2')``: blur p 1.0 / 0.1, solarize 0 / 0.2). The
target's BatchNorm runs in training mode and keeps its own running statistics (see ``siamese.py``).

Config (``config.method``): momentum, momentum_final, proj_{layers,hidden_dim,dim},
pred_{layers,hidden_dim,dim}.
"""
from __future__ import annotations

import dataclasses

import jax

from ssl_jax import losses
from ssl_jax.methods import common
from ssl_jax.methods import teacher
from ssl_jax.methods.contrastive.siamese import SiameseMethod


class BYOL(SiameseMethod):
  """BYOL: online predictor regresses the EMA target's projection of the other view."""

  use_target = True
  use_predictor = True

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(SiameseMethod.Hparams, common.PredictorHparams, teacher.EMAHparams):
    pass

  def loss(self, params, state, views, rng):
    k1, k2, k3, k4 = jax.random.split(rng, 4)
    stats = state.buffers['batch_stats']
    _, p1, stats = self.online(params, stats, views['view0'], k1)
    _, p2, stats = self.online(params, stats, views['view1'], k2)
    t1, target = self.target(state.buffers['teacher'], views['view0'], k3)
    t2, target = self.target(target, views['view1'], k4)
    loss = losses.normalized_mse(p1, t2) + losses.normalized_mse(p2, t1)
    buffers = dict(state.buffers, batch_stats=stats, teacher=target)
    cos = 1.0 - loss / 4.0  # mean cosine similarity between predictions and target projections
    return loss, ({'cosine': cos}, buffers)
