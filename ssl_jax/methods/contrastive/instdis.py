"""InstDis (Wu, Xiong, Yu & Lin, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018).

Every training image is its own class. One augmented view per image goes through the backbone and
a linear layer to a 128-d L2-normalised feature ``v``; a memory bank (``buffers['bank']``, one
row per training image, no gradient) holds a running average of each image's feature. The loss is
the non-parametric softmax of the paper's Eq. (2) over the *whole* bank with temperature 0.07 --
the exact "full softmax" objective, not the NCE approximation (``losses.instance_discrimination``).
After the forward the batch's rows are updated with momentum 0.5 and renormalised, a scatter at
the batch's image indices (``losses.memory_bank_update``). The host batch carries each image's
index in the training split (``batch['index']``); ``views`` passes it through.

Config (``config.method``): temperature, feature_dim, bank_momentum, bank_size (0: the size of
``data.train_split``).
"""
from __future__ import annotations

import dataclasses

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.data import sources
from ssl_jax.methods.base import Method, apply_module, init_module


def init_bank(rng, size: int, dim: int):
  """(size, dim) memory bank, the official lemniscate init: uniform in [-stdv, stdv],
  stdv = 1 / sqrt(dim / 3) (unit expected norm); rows are overwritten by momentum averages as
  images are visited."""
  stdv = 1.0 / math.sqrt(dim / 3)
  return jax.random.uniform(rng, (size, dim), jnp.float32, -stdv, stdv)


class InstDis(Method):
  """Instance discrimination with a memory bank and a full softmax over it."""

  num_views = 1

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams):
    temperature: float
    feature_dim: int
    bank_momentum: float
    bank_size: int = 0   # 0: the size of data.train_split

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.temperature = m.temperature
    self.out_dim = m.feature_dim
    self.bank_momentum = m.bank_momentum
    self.bank_size = m.bank_size or len(sources.get_source(config.data,
                                                                     config.data.train_split))
    self.head = nn.Dense(self.out_dim)

  def views(self, batch, rng):
    out = super().views(batch, rng)
    out['index'] = batch['index'].astype(jnp.int32)
    return out

  def init(self, rng, batch):
    k1, k2, k3 = jax.random.split(rng, 3)
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    bb_params, bb_stats = init_module(self.backbone, k1, x)
    head_params = self.head.init(k2, jnp.zeros((2, self.feature_dim)))['params']
    bank = init_bank(k3, self.bank_size, self.out_dim)
    params = {'backbone': bb_params, 'head': head_params}
    buffers = {'batch_stats': {'backbone': bb_stats}, 'bank': bank}
    return params, buffers

  def loss(self, params, state, views, rng):
    stats = state.buffers['batch_stats']
    h, bb_stats = apply_module(self.backbone, params['backbone'], stats['backbone'],
                               views['view0'], train=True, rngs={'dropout': rng})
    v = losses.l2_normalize(self.head.apply({'params': params['head']}, h))
    bank, index = state.buffers['bank'], views['index']
    loss, acc = losses.instance_discrimination(v, bank, index, self.temperature)
    bank = losses.memory_bank_update(bank, index, v, self.bank_momentum)
    buffers = dict(state.buffers, batch_stats={'backbone': bb_stats}, bank=bank)
    return loss, ({'instance_acc': acc}, buffers)
