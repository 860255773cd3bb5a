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

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods.base import Method, apply_module, init_module
from ssl_jax.models.heads import MLP


class VICReg(Method):
  """VICReg with configurable invariance / variance / covariance weights."""

  def __init__(self, config):
    super().__init__(config)
    m = config.method
    self.coeffs = dict(sim_coeff=m.get('sim_coeff', 25.0), std_coeff=m.get('std_coeff', 25.0),
                       cov_coeff=m.get('cov_coeff', 1.0))
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
    loss, aux = losses.vicreg(z1, z2, **self.coeffs)
    buffers = dict(state.buffers, batch_stats={'backbone': bb_stats, 'projector': pj_stats})
    return loss, (aux, buffers)
