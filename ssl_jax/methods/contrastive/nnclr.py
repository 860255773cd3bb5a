"""NNCLR (Dwibedi et al., "With a Little Help from My Friends: Nearest-Neighbor Contrastive
Learning of Visual Representations", ICCV 2021).

SimCLR-like, but the positive of view 1's embedding z1_i is its nearest neighbour NN(z1_i, Q) in
a support set Q of embeddings of earlier batches; the candidates are the predictor outputs of view
2 over the global batch (Eq. 2, ``losses.nnclr_contrastive``), symmetrised (Sec. 3.2):

    L = [ L(NN(z1, Q), p2) + L(NN(z2, Q), p1) ] / 2 .

The support set is a fixed-size FIFO queue (``buffers['support']`` (K, D), ``support_ptr``) of
L2-normalised projections of view 1, initialised with random unit vectors and updated inside the
jitted step after the look-up (``common.enqueue``); K must be a multiple of the global batch. It is
part of the train state, hence of the checkpoint. No momentum encoder (the paper's final model has
none).

Config (``config.method``): temperature, support_size, proj_*, pred_*.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods import common
from ssl_jax.methods.contrastive.siamese import SiameseMethod, random_unit_rows


class NNCLR(SiameseMethod):
  """NNCLR: nearest-neighbour positives from a support-set queue."""

  use_target = False
  use_predictor = True

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(SiameseMethod.Hparams, common.PredictorHparams):
    temperature: float
    support_size: int

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.temperature = m.temperature
    self.support_size = m.support_size
    if self.support_size % config.data.batch_size:
      raise ValueError(f'config.method.support_size={self.support_size} must be a multiple of '
                       f'config.data.batch_size={config.data.batch_size}')

  def init_extra(self, rng):
    return {'support': random_unit_rows(rng, self.support_size, self.hp.proj_dim),
            'support_ptr': jnp.zeros((), jnp.int32)}

  def loss(self, params, state, views, rng):
    k1, k2 = jax.random.split(rng)
    stats = state.buffers['batch_stats']
    z1, p1, stats = self.online(params, stats, views['view0'], k1)
    z2, p2, stats = self.online(params, stats, views['view1'], k2)
    support = state.buffers['support']
    loss, acc = losses.nnclr_symmetric(z1, z2, p1, p2, support, self.temperature)
    new_support, ptr = common.enqueue(support, state.buffers['support_ptr'],
                                      jax.lax.stop_gradient(losses.l2_normalize(z1)))
    buffers = dict(state.buffers, batch_stats=stats, support=new_support, support_ptr=ptr)
    return loss, ({'contrastive_acc': acc}, buffers)
