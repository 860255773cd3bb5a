"""SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020).

Two augmented views of every image go through the backbone and an MLP projector
(Linear-BN-ReLU-Linear); the NT-Xent loss (``losses.nt_xent``) treats the other view of the same
image as the positive and the other 2N - 2 views of the *global* batch as negatives. Both views
share one backbone call, so BatchNorm statistics span the whole global batch of 2N views.

Config (``config.method``): temperature, proj_hidden_dim, proj_dim, proj_layers.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods.base import Method, apply_module, init_module
from ssl_jax.models.heads import MLP


class SimCLR(Method):
  """SimCLR with a 2-view NT-Xent loss over the global batch."""

  def __init__(self, config):
    super().__init__(config)
    m = config.method
    self.temperature = m.temperature
    self.projector = MLP(hidden_dims=(m.proj_hidden_dim,) * (m.proj_layers - 1),
                         out_dim=m.proj_dim, use_bn=True, last_bn=m.get('proj_last_bn', False))

  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    bb_params, bb_stats = init_module(self.backbone, k1, x)
    h = jnp.zeros((2, self.feature_dim), jnp.float32)
    pj_params, pj_stats = init_module(self.projector, k2, h)
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
    loss, acc = losses.nt_xent(z1, z2, self.temperature)
    buffers = dict(state.buffers, batch_stats={'backbone': bb_stats, 'projector': pj_stats})
    return loss, ({'contrastive_acc': acc}, buffers)
