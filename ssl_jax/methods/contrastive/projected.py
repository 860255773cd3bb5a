"""Shared skeleton of the symmetric two-view methods with one projector and no target network:
SimCLR, Barlow Twins, VICReg.

Both views go through *one* backbone call and one projector call (concatenated), so BatchNorm
statistics span the whole global batch of 2N views; the subclass only supplies the loss of the
two embeddings, ``pair_loss(z1, z2) -> (loss, metrics)``.

Parameters ``{'backbone', 'projector'}``; buffers ``{'batch_stats': {'backbone', 'projector'}}``.
The projector is Linear-BN-ReLU x (proj_layers - 1), Linear (+ BN if ``proj_last_bn``).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssl_jax.methods.base import Method, apply_module, init_module
from ssl_jax.models.heads import MLP


class ProjectedPair(Method):
  """Backbone + projector on two views; the loss of the two embeddings comes from the subclass."""

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams):
    proj_layers: int
    proj_hidden_dim: int
    proj_dim: int
    proj_last_bn: bool = False

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.projector = MLP(hidden_dims=(m.proj_hidden_dim,) * (m.proj_layers - 1),
                         out_dim=m.proj_dim, use_bn=True, last_bn=m.proj_last_bn)

  def pair_loss(self, z1, z2):
    """(scalar loss, dict of metrics) of the two views' embeddings (N, D) each."""
    raise NotImplementedError

  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    bb_params, bb_stats = init_module(self.backbone, k1, x)
    pj_params, pj_stats = init_module(self.projector, k2,
                                      jnp.zeros((2, self.feature_dim), jnp.float32))
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
    loss, metrics = self.pair_loss(z1, z2)
    buffers = dict(state.buffers, batch_stats={'backbone': bb_stats, 'projector': pj_stats})
    return loss, (metrics, buffers)
