"""PIRL: Pretext-Invariant Representation Learning (Misra & van der Maaten, CVPR 2020), with the
jigsaw transformation.

Instead of predicting the jigsaw permutation, PIRL asks the representation of an image I and of
its jigsaw-transformed version I^t to agree:

* f(v_I): the backbone on the image, a linear projection, L2-normalised;
* g(v_{I^t}): the backbone on each of the 3x3 shuffled tiles (``jigsaw.cut_tiles`` /
  ``permute_tiles``), a per-tile linear projection, the tile codes concatenated in their shuffled
  order, a linear projection, L2-normalised;
* a memory bank m (one row per training image, ``batch['index']``) holds an exponential moving
  average of f(v_I) (momentum 0.5, Sec. 3.2) and supplies the negatives.

Loss (Sec. 3.2, Eq. 5): L = lambda L_c(m_I, g(v_{I^t})) + (1 - lambda) L_c(m_I, f(v_I)), lambda = 0.5,
where L_c is the contrastive loss against ``num_negatives`` rows of the memory bank drawn
uniformly. We use the softmax (InfoNCE) form of L_c (``losses.memory_bank_info_nce``), as PyContrast's
PIRL reimplementation does, instead of the paper's binary NCE approximation (Eq. 3-4); the memory
bank, the two terms and lambda are the paper's.

The memory bank is a method buffer (``state.buffers['bank']``), updated inside the compiled step
after the loss is computed and checkpointed with the rest of the state.

Config (``config.method``): grid, tile_size, proj_dim, temperature, num_negatives, bank_momentum,
loss_lambda, bank_size (0 = the size of the training split).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.data import sources
from ssl_jax.data.pipeline import CropSpec
from ssl_jax.methods.base import Method, apply_module, init_module
from ssl_jax.methods.pretext import jigsaw


class TileHead(nn.Module):
  """g's head: per-tile Dense, concatenation in the shuffled order, Dense to ``dim``."""
  num_tiles: int
  dim: int

  @nn.compact
  def __call__(self, h, train: bool = False):
    del train
    h = nn.Dense(self.dim, name='tile_proj')(h).reshape(-1, self.num_tiles * self.dim)
    return nn.Dense(self.dim, name='proj')(h).astype(jnp.float32)


class PIRL(Method):
  """Jigsaw-invariant representations with a memory bank."""

  num_views = 1

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams):
    grid: int = 3
    tile_size: int
    proj_dim: int = 128
    temperature: float
    num_negatives: int
    bank_momentum: float = 0.5
    bank_size: int = 0   # 0: the size of data.train_split
    loss_lambda: float = 0.5

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.grid = m.grid
    self.num_tiles = self.grid * self.grid
    self.tile_size = m.tile_size
    self.proj_dim = m.proj_dim
    self.f_head = nn.Dense(self.proj_dim, name='f_head')
    self.g_head = TileHead(self.num_tiles, self.proj_dim)
    self.bank_size = m.bank_size or len(
        sources.get_source(config.data, config.data.train_split))

  def crop_specs(self):
    d = self.config.data
    return (CropSpec('view0', d.image_size, tuple(d.crop_scale), flip=d.flip),)

  def views(self, batch, rng):
    k_aug, k_tile, k_perm = jax.random.split(rng, 3)
    x = super().views(batch, k_aug)['view0']
    tiles = jigsaw.cut_tiles(k_tile, x, self.grid, self.tile_size)
    perms = jax.vmap(lambda k: jax.random.permutation(k, self.num_tiles))(
        jax.random.split(k_perm, x.shape[0]))
    return {'image': x, 'tiles': jigsaw.permute_tiles(tiles, perms), 'index': batch['index']}

  def init(self, rng, batch):
    k1, k2, k3, k4 = jax.random.split(rng, 4)
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    bb_params, bb_stats = init_module(self.backbone, k1, x)
    h = jnp.zeros((self.num_tiles, self.feature_dim))
    params = {'backbone': bb_params,
              'f_head': self.f_head.init(k2, h)['params'],
              'g_head': init_module(self.g_head, k3, h)[0]}
    bank = losses.l2_normalize(jax.random.normal(k4, (self.bank_size, self.proj_dim)))
    return params, {'batch_stats': {'backbone': bb_stats}, 'bank': bank}

  def loss(self, params, state, views, rng):
    m = self.hp
    stats = state.buffers['batch_stats']['backbone']
    tiles = views['tiles'].reshape((-1,) + views['tiles'].shape[2:])
    # BatchNorm statistics are per input kind (images vs tiles differ in scale); run twice.
    h_img, stats = apply_module(self.backbone, params['backbone'], stats, views['image'],
                                train=True, rngs={'dropout': rng})
    h_tiles, stats = apply_module(self.backbone, params['backbone'], stats, tiles, train=True,
                                  rngs={'dropout': rng})
    f = losses.l2_normalize(self.f_head.apply({'params': params['f_head']}, h_img))
    g = losses.l2_normalize(self.g_head.apply({'params': params['g_head']}, h_tiles))
    bank = state.buffers['bank']
    idx = views['index'].astype(jnp.int32) % self.bank_size
    positives = bank[idx]
    neg_idx = jax.random.randint(jax.random.fold_in(rng, 1), (m.num_negatives,), 0, self.bank_size)
    negatives = bank[neg_idx]
    l_g, acc_g = losses.memory_bank_info_nce(g, positives, negatives, m.temperature)
    l_f, acc_f = losses.memory_bank_info_nce(f, positives, negatives, m.temperature)
    lam = m.loss_lambda
    loss = lam * l_g + (1 - lam) * l_f
    mom = m.bank_momentum
    new_rows = losses.l2_normalize(mom * positives + (1 - mom) * jax.lax.stop_gradient(f))
    bank = bank.at[idx].set(new_rows)
    buffers = dict(state.buffers, batch_stats={'backbone': stats}, bank=bank)
    return loss, ({'loss_jigsaw': l_g, 'loss_image': l_f, 'acc_jigsaw': acc_g, 'acc_image': acc_f},
                  buffers)
