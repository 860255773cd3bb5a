"""CPC (van den Oord, Li & Vinyals, "Representation Learning with Contrastive Predictive Coding",
2018) in its v2 form (Henaff et al., "Data-Efficient Image Recognition with Contrastive Predictive
Coding", ICML 2020).

One host crop per image is cut into an overlapping grid of ``patch_size`` patches at
``patch_stride`` (CPC v2: 64 px patches, stride 32, on 240 px crops -> a 7x7 grid); the grid is
``G = (image_size - patch_size) / patch_stride + 1`` patches per side. Every patch goes through the
backbone (``config.model``) to a pooled latent :math:`z_{i,j}`. A context network (the paper's
PixelCNN-style stack of residual blocks, ``CPCContext``) sees only rows :math:`\\le i` and gives
:math:`c_{i,j}`; a 1x1 map per step predicts :math:`\\hat z_{i+k,j} = W_k c_{i,j}` for k in
[min_step, max_step], scaled by ``emb_scale`` (the paper's 0.1, an inverse temperature), against
targets that are a 1x1 projection of the latents to ``target_dim`` (the pseudocode's
``z2target``). Loss: ``losses.cpc_infonce`` -- every other patch latent of the batch (all
positions of all images) is a negative.

Augmentation. The whole crop gets the config's colour recipe (``config.aug``); then every patch is
augmented independently, as CPC v2 does (Sec. 4.1): a horizontal flip with probability
``patch_flip`` and "colour dropping" (keep one random channel of three, zero the other two in the
normalised space, i.e. set them to the channel mean) with probability ``patch_color_drop``.
CPC v2's other per-patch augmentations (elastic / affine spatial transforms, colour jitter per
patch) are not implemented.

The context network's causality: each residual block is 1x1 -> ReLU -> 1x3 (within the row) ->
pad one row on top -> 2x1 VALID (rows i-1 and i) -> ReLU -> 1x1, added to its input, as the
appendix pseudocode; so :math:`c_{i,\\cdot}` depends on latent rows :math:`\\le i` only (tested:
its gradient w.r.t. rows > i is exactly zero).

Normalisation: the backbone keeps the model's BatchNorm (batch statistics over all patches of the
batch); CPC v2 replaces BatchNorm by layer normalisation in its ResNet, which this library's
ResNet does not offer.

Evaluation (``features``), ``eval_features``: 'patches' (default) cuts the eval image into the
same grid, encodes every patch with the frozen backbone and mean-pools the grid (CPC v2's linear
evaluation on mean-pooled patch encodings); 'image' runs the backbone on the whole image. On the
built-in set 'patches' is the better of the two (configs/cpc.py records both). The exported encoder
(``encoder_variables``) is the patch backbone.

Config (``config.method``): patch_size, patch_stride, min_step, max_step, context_blocks,
context_dim, target_dim, emb_scale, patch_flip, patch_color_drop, eval_features.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods.base import Method, apply_module, init_module

EVAL_FEATURES = ('patches', 'image')


def grid_size(image_size: int, patch_size: int, patch_stride: int) -> int:
  """Patches per side of the grid; raises ValueError naming the config field that is wrong."""
  if not isinstance(patch_size, int) or patch_size < 1:
    raise ValueError(f'config.method.patch_size={patch_size!r} must be a positive int')
  if not isinstance(patch_stride, int) or patch_stride < 1:
    raise ValueError(f'config.method.patch_stride={patch_stride!r} must be a positive int')
  if patch_size > image_size:
    raise ValueError(f'config.method.patch_size={patch_size} is larger than '
                     f'config.data.image_size={image_size}')
  if (image_size - patch_size) % patch_stride:
    raise ValueError(f'config.method.patch_stride={patch_stride} does not tile '
                     f'config.data.image_size={image_size} with patch_size={patch_size}: '
                     '(image_size - patch_size) must be a multiple of patch_stride')
  return (image_size - patch_size) // patch_stride + 1


def extract_patches(images, patch_size: int, patch_stride: int):
  """(B, S, S, C) -> (B, G, G, p, p, C) overlapping patches; ``[:, i, j]`` is the patch whose top
  left pixel is (i * stride, j * stride)."""
  b, h, w, c = images.shape
  if h != w:
    raise ValueError(f'CPC needs square crops, got {h}x{w}')
  g = grid_size(h, patch_size, patch_stride)
  idx = jnp.arange(g)[:, None] * patch_stride + jnp.arange(patch_size)[None, :]   # (G, p)
  x = images[:, idx]                     # (B, G, p, W, C)
  x = x[:, :, :, idx]                    # (B, G, p, G, p, C)
  return x.transpose(0, 1, 3, 2, 4, 5)


def augment_patches(key, patches, flip: float, color_drop: float):
  """Independent per-patch augmentation (CPC v2): horizontal flip with probability ``flip``, and
  with probability ``color_drop`` keep one random channel, zeroing the other two."""
  k_flip, k_drop, k_chan = jax.random.split(key, 3)
  lead = patches.shape[:3]
  if flip > 0:
    do = jax.random.bernoulli(k_flip, flip, lead)[..., None, None, None]
    patches = jnp.where(do, patches[:, :, :, :, ::-1], patches)
  if color_drop > 0:
    c = patches.shape[-1]
    do = jax.random.bernoulli(k_drop, color_drop, lead)
    keep = jax.nn.one_hot(jax.random.randint(k_chan, lead, 0, c), c, dtype=patches.dtype)
    mask = jnp.where(do[..., None], keep, jnp.ones_like(keep))
    patches = patches * mask[:, :, :, None, None, :]
  return patches


class CPCContext(nn.Module):
  """PixelCNN-style context network over a (B, H, W, D) grid of latents (CPC v2 appendix).

  Each residual block: 1x1 conv -> ReLU -> 1x3 conv (same row) -> one row of zero padding on top
  -> 2x1 VALID conv (rows i-1, i) -> ReLU -> 1x1 conv back to D, added to the input; a final ReLU.
  Output row i depends on input rows <= i only.
  """
  num_blocks: int = 5
  hidden_dim: int = 256

  @nn.compact
  def __call__(self, z):
    d = z.shape[-1]
    c = z
    for n in range(self.num_blocks):
      y = nn.relu(nn.Conv(self.hidden_dim, (1, 1), name=f'block{n}_in')(c))
      y = nn.Conv(self.hidden_dim, (1, 3), padding=((0, 0), (1, 1)), name=f'block{n}_row')(y)
      y = jnp.pad(y, ((0, 0), (1, 0), (0, 0), (0, 0)))
      y = nn.relu(nn.Conv(self.hidden_dim, (2, 1), padding='VALID', name=f'block{n}_col')(y))
      c = c + nn.Conv(d, (1, 1), name=f'block{n}_out')(y)
    return nn.relu(c)


class CPCHead(nn.Module):
  """Context network, the target projection (z2target) and one 1x1 predictor W_k per step."""
  steps: tuple
  num_blocks: int
  hidden_dim: int
  target_dim: int
  emb_scale: float

  @nn.compact
  def __call__(self, z):
    c = CPCContext(self.num_blocks, self.hidden_dim, name='context')(z)
    targets = nn.Dense(self.target_dim, name='z2target')(z)
    preds = [nn.Dense(self.target_dim, name=f'pred_{k}')(c) * self.emb_scale for k in self.steps]
    return preds, targets


class CPC(Method):
  """Contrastive Predictive Coding v2: predict patch latents rows below from a causal context."""

  num_views = 1

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams):
    patch_size: int
    patch_stride: int
    min_step: int
    max_step: int
    context_blocks: int
    context_dim: int
    target_dim: int
    emb_scale: float
    patch_flip: float
    patch_color_drop: float
    eval_features: str   # one of EVAL_FEATURES

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.patch_size, self.patch_stride = m.patch_size, m.patch_stride
    self.grid = grid_size(config.data.image_size, self.patch_size, self.patch_stride)
    if not 1 <= m.min_step <= m.max_step:
      raise ValueError(f'config.method.min_step={m.min_step} and max_step={m.max_step} must '
                       'satisfy 1 <= min_step <= max_step')
    if m.max_step >= self.grid:
      raise ValueError(f'config.method.max_step={m.max_step} must be smaller than the grid of '
                       f'{self.grid} rows (data.image_size={config.data.image_size}, '
                       f'patch_size={self.patch_size}, patch_stride={self.patch_stride})')
    if m.eval_features not in EVAL_FEATURES:
      raise ValueError(f'config.method.eval_features={m.eval_features!r}: use one of '
                       f'{EVAL_FEATURES}')
    for field in ('patch_flip', 'patch_color_drop'):
      if not 0.0 <= getattr(m, field) <= 1.0:
        raise ValueError(f'config.method.{field}={getattr(m, field)!r} must be a probability in '
                         '[0, 1]')
    self.steps = tuple(range(m.min_step, m.max_step + 1))
    self.eval_features = m.eval_features
    self.features_from_encoder = self.eval_features == 'image'   # 'patches': a grid of encodings
    self.patch_flip, self.patch_color_drop = m.patch_flip, m.patch_color_drop
    self.head = CPCHead(self.steps, m.context_blocks, m.context_dim, m.target_dim, m.emb_scale)

  def views(self, batch, rng):
    k_aug, k_patch = jax.random.split(rng)
    x = super().views(batch, k_aug)['view0']
    patches = extract_patches(x, self.patch_size, self.patch_stride)
    return {'patches': augment_patches(k_patch, patches, self.patch_flip, self.patch_color_drop)}

  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    p, g = self.patch_size, self.grid
    c = batch['view0'].shape[-1]
    bb_params, bb_stats = init_module(self.backbone, k1, jnp.zeros((2, p, p, c)))
    hd_params = self.head.init(k2, jnp.zeros((2, g, g, self.feature_dim)))['params']
    return ({'backbone': bb_params, 'head': hd_params},
            {'batch_stats': {'backbone': bb_stats}})

  def encode_patches(self, params, stats, patches, *, train: bool, rng=None):
    """(B, G, G, p, p, C) patches -> ((B, G, G, D) latents, new BatchNorm stats)."""
    b, g = patches.shape[0], patches.shape[1]
    x = patches.reshape((b * g * g,) + patches.shape[3:])
    z, stats = apply_module(self.backbone, params, stats, x, train=train,
                            rngs={'dropout': rng} if rng is not None else None)
    return z.reshape(b, g, g, -1), stats

  def loss(self, params, state, views, rng):
    stats = state.buffers['batch_stats']
    z, bb_stats = self.encode_patches(params['backbone'], stats['backbone'], views['patches'],
                                      train=True, rng=rng)
    preds, targets = self.head.apply({'params': params['head']}, z)
    loss, acc = losses.cpc_infonce(preds, targets, self.steps)
    buffers = dict(state.buffers, batch_stats={'backbone': bb_stats})
    return loss, ({'cpc_acc': acc}, buffers)

  def features(self, params, buffers, images_uint8):
    """'patches': mean over the grid of frozen patch encodings (CPC v2's evaluation input);
    'image': the backbone on the whole image."""
    if self.eval_features == 'image':
      return super().features(params, buffers, images_uint8)
    x = self.normalize(images_uint8)
    patches = extract_patches(x, self.patch_size, self.patch_stride)
    z, _ = self.encode_patches(params['backbone'],
                               buffers.get('batch_stats', {}).get('backbone', {}), patches,
                               train=False)
    return jnp.mean(z, axis=(1, 2)).astype(jnp.float32)
