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

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods.base import Method, apply_module, init_module
from ssl_jax.models.heads import MLP


class BarlowTwins(Method):
  """Barlow Twins with the cross-correlation computed over the global batch."""

  def __init__(self, config):
    super().__init__(config)
    m = config.method
    self.lambd = m.lambd
    self.projector = MLP(hidden_dims=(m.proj_hidden_dim,) * (m.proj_layers - 1),
                         out_dim=m.proj_dim, use_bn=True, last_bn=False)

  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    bb_params, bb_stats = init_module(self.backbone, k1, x)
    pj_params, pj_stats = init_module(self.projector, k2, jnp.zeros((2, self.feature_dim)))
    params = {'backbone': bb_params, 'projector': pj_params}
    buffers = {'batch_stats': {'backbone': bb_stats, 'projector': pj_stats}}
    return params, buffers

  def loss(self, params, state, views, rng):
    stats = state.buffers['batch_stats']
    x = jnp.concatenate([views['view0'], views['view1']], axis=0)
    h, bb_stats = apply_module(self.backbone, params['backbone'], stats['backbone'], x, train=True,
                               rngs={'dropout': rng})
    z, pj_stats = apply_module(self.projector, params['projector'], stats['projector'], h,
                               train=True)
    z1, z2 = jnp.split(z, 2, axis=0)
    loss, aux = losses.barlow_twins(z1, z2, self.lambd)
    buffers = dict(state.buffers, batch_stats={'backbone': bb_stats, 'projector': pj_stats})
    return loss, (aux, buffers)
