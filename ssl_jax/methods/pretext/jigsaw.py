"""Jigsaw puzzles (Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving
Jigsaw Puzzles", ECCV 2016).

The image (a host crop of ``grid * cell`` pixels) is cut into a ``grid x grid`` lattice of cells;
from every cell a ``tile_size`` tile is cropped at a random offset (the gap between tiles stops
the network from matching edges, Sec. 3.2); the tiles are shuffled by one permutation out of a
fixed set of ``num_permutations`` chosen with maximal average Hamming distance (Algorithm 1,
``max_hamming_permutations``) and the network classifies which permutation it sees.

Network (the context-free network, Fig. 3): the backbone embeds every tile independently (shared
weights), a per-tile fully connected layer (fc6) maps it to ``tile_dim``, the tile codes are
concatenated in their shuffled order and an MLP (fc7, fc8) predicts the permutation index.
Loss: ``losses.pretext_cross_entropy``. The transferable encoder is the backbone alone.

Config (``config.method``): grid, tile_size, num_permutations, tile_dim, head_hidden_dim,
permutation_seed.
"""
from __future__ import annotations

import dataclasses

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import losses
from ssl_jax.data.pipeline import CropSpec
from ssl_jax.methods.base import Method, apply_module, init_module
from ssl_jax.models.norm import BatchNorm


@functools.lru_cache(maxsize=8)
def max_hamming_permutations(num: int, num_tiles: int = 9, seed: int = 0) -> np.ndarray:
  """``num`` permutations of ``range(num_tiles)`` with maximal average Hamming distance.

  Noroozi & Favaro 2016, Algorithm 1: start from a random permutation; then repeatedly add the
  remaining permutation whose summed Hamming distance to the already selected ones is largest
  (ties: the first in lexicographic order). Returns (num, num_tiles) int32; row 0 is the random
  start. Deterministic given ``seed``.
  """
  all_perms = np.asarray(list(itertools.permutations(range(num_tiles))), np.int8)
  if not 1 <= num <= len(all_perms):
    raise ValueError(f'num_permutations must be in [1, {len(all_perms)}] for {num_tiles} tiles, '
                     f'got {num}')
  j = int(np.random.default_rng(seed).integers(len(all_perms)))
  dist_sum = np.zeros(len(all_perms), np.int64)
  used = np.zeros(len(all_perms), bool)
  chosen = []
  for _ in range(num):
    chosen.append(j)
    used[j] = True
    dist_sum += np.count_nonzero(all_perms != all_perms[j], axis=1)
    j = int(np.argmax(np.where(used, -1, dist_sum)))
  return all_perms[chosen].astype(np.int32)


def cut_tiles(key, images, grid: int, tile_size: int):
  """(B, grid*cell, grid*cell, C) -> (B, grid*grid, tile, tile, C) tiles in row-major cell order,
  each cropped at a random offset in [0, cell - tile] inside its cell (one draw per tile)."""
  b, h, w, c = images.shape
  if h != w or h % grid:
    raise ValueError(f'jigsaw needs square images whose side is a multiple of grid={grid}, '
                     f'got {h}x{w}')
  cell = h // grid
  if tile_size > cell:
    raise ValueError(f'tile_size={tile_size} is larger than the cell ({cell} px)')
  cells = images.reshape(b, grid, cell, grid, cell, c).transpose(0, 1, 3, 2, 4, 5)
  cells = cells.reshape(b, grid * grid, cell, cell, c)
  offsets = jax.random.randint(key, (b, grid * grid, 2), 0, cell - tile_size + 1)
  crop = lambda img, off: jax.lax.dynamic_slice(img, (off[0], off[1], 0), (tile_size, tile_size, c))
  return jax.vmap(jax.vmap(crop))(cells, offsets)


def permute_tiles(tiles, perms):
  """Position j of the output holds tile ``perms[:, j]``: (B, T, ...) tiles, (B, T) perms."""
  idx = perms.reshape(perms.shape + (1,) * (tiles.ndim - 2))
  return jnp.take_along_axis(tiles, idx, axis=1)


class JigsawHead(nn.Module):
  """fc6 per tile (Dense-BN-ReLU to ``tile_dim``), concatenation, fc7 (Dense-BN-ReLU), fc8."""
  num_tiles: int
  tile_dim: int
  hidden_dim: int
  num_classes: int

  @nn.compact
  def __call__(self, h, train: bool = False):
    bn = lambda name: BatchNorm(use_running_average=not train, momentum=0.9, name=name)
    h = nn.relu(bn('bn6')(nn.Dense(self.tile_dim, use_bias=False, name='fc6')(h)))
    h = h.reshape(-1, self.num_tiles * self.tile_dim)
    h = nn.relu(bn('bn7')(nn.Dense(self.hidden_dim, use_bias=False, name='fc7')(h)))
    return nn.Dense(self.num_classes, name='fc8')(h).astype(jnp.float32)


class Jigsaw(Method):
  """Permutation classification of shuffled tiles with a maximal-Hamming permutation set."""

  num_views = 1

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams):
    grid: int = 3
    tile_size: int
    num_permutations: int
    permutation_seed: int = 0
    tile_dim: int = 128
    head_hidden_dim: int = 512

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.grid = m.grid
    self.num_tiles = self.grid * self.grid
    self.tile_size = m.tile_size
    self.permutations = max_hamming_permutations(m.num_permutations, self.num_tiles,
                                                 m.permutation_seed)
    self.head = JigsawHead(self.num_tiles, m.tile_dim, m.head_hidden_dim, m.num_permutations)

  def crop_specs(self):
    d = self.config.data
    return (CropSpec('view0', d.image_size, tuple(d.crop_scale), flip=d.flip),)

  def shuffled_tiles(self, key, images):
    """(tiles (B, T, t, t, C) shuffled, permutation labels (B,)) for already augmented images."""
    k_tile, k_perm = jax.random.split(key)
    tiles = cut_tiles(k_tile, images, self.grid, self.tile_size)
    labels = jax.random.randint(k_perm, (images.shape[0],), 0, len(self.permutations))
    perms = jnp.asarray(self.permutations)[labels]
    return permute_tiles(tiles, perms), labels

  def views(self, batch, rng):
    k_aug, k_jig = jax.random.split(rng)
    x = super().views(batch, k_aug)['view0']
    tiles, labels = self.shuffled_tiles(k_jig, x)
    return {'tiles': tiles, 'labels': labels}

  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    t = self.tile_size
    bb_params, bb_stats = init_module(self.backbone, k1, jnp.zeros((2, t, t, 3)))
    hd_params, hd_stats = init_module(self.head, k2,
                                      jnp.zeros((2 * self.num_tiles, self.feature_dim)))
    return ({'backbone': bb_params, 'head': hd_params},
            {'batch_stats': {'backbone': bb_stats, 'head': hd_stats}})

  def loss(self, params, state, views, rng):
    stats = state.buffers['batch_stats']
    tiles = views['tiles']
    x = tiles.reshape((-1,) + tiles.shape[2:])
    h, bb_stats = apply_module(self.backbone, params['backbone'], stats['backbone'], x,
                               train=True, rngs={'dropout': rng})
    logits, hd_stats = apply_module(self.head, params['head'], stats['head'], h, train=True)
    loss, acc = losses.pretext_cross_entropy(logits, views['labels'])
    buffers = dict(state.buffers, batch_stats={'backbone': bb_stats, 'head': hd_stats})
    return loss, ({'jigsaw_acc': acc}, buffers)
