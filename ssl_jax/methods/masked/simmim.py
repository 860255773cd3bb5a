"""SimMIM (Xie et al., "SimMIM: A Simple Framework for Masked Image Modeling", CVPR 2022).

A random ``mask_ratio`` (0.6) of *mask patches* — squares of ``mask_patch_size`` pixels (32 px in
the paper), larger than the model's patches — is hidden per image: exactly
``ceil(mask_ratio * M)`` of the M mask patches (argsort of noise, SimMIM's ``MaskGenerator``), each
covering ``(mask_patch_size / patch_size)^2`` model patches. The ViT sees *all* positions, masked
patches replaced by a learned mask token (owned here, ``params['mask_token']``); a one-layer
linear head (:class:`ssl_jax.models.decoders.SimMIMHead`) predicts the raw (normalised) pixels of
each patch and the loss is L1 on the masked pixels only (``losses.simmim_l1_loss``).

With a Swin backbone (the paper's main one) the mask token replaces masked tokens of the patch
embedding (stride ``model.patch_size``) and the head reads the last stage (stride
``Swin.out_stride``, 32 in the paper, equal to its mask patches): one linear layer per last-stage
token to its ``out_stride^2 * 3`` pixels (the paper's 1x1 conv + PixelShuffle). A ViT's output
stride is its patch size.

Config (``config.method``): mask_ratio, mask_patch_size (a multiple of the output stride that
divides ``data.image_size``); loss ('l1', the paper's; 'smooth_l1' / 'l2' from its
loss ablation, ``losses.simmim_loss``); norm_target_window (0: the paper's raw pixels; an odd
window: each target pixel standardised over its neighbourhood, the official repository's
``NORM_TARGET`` of the SimMIM data-scaling follow-up, ``losses.local_norm_targets``); head_depth /
head_heads (0: the paper's linear head; >0: transformer blocks before it, the heavier heads of the
paper's Table 3 ablation).
"""
from __future__ import annotations

import dataclasses

import math

import jax
import jax.numpy as jnp

from ssl_jax import losses, models
from ssl_jax.methods.masked import MaskedImageMethod
from ssl_jax.models import vit as vit_lib
from ssl_jax.models.decoders import SimMIMHead
from ssl_jax.models.swin import Swin


def simmim_masks(rng, batch: int, mask_grid: int, scale: int, mask_ratio: float):
  """(B, (mask_grid*scale)^2) float masks, 1 = masked, in model-patch row-major order.

  Exactly ``ceil(mask_ratio * mask_grid^2)`` mask patches per image (SimMIM's MaskGenerator), each
  upsampled to ``scale x scale`` model patches.
  """
  m = mask_grid * mask_grid
  count = int(math.ceil(m * mask_ratio))
  ranks = jnp.argsort(jnp.argsort(jax.random.uniform(rng, (batch, m)), axis=1), axis=1)
  small = (ranks < count).astype(jnp.float32).reshape(batch, mask_grid, mask_grid)
  big = jnp.repeat(jnp.repeat(small, scale, axis=1), scale, axis=2)
  return big.reshape(batch, -1)


class SimMIM(MaskedImageMethod):
  """Mask-token ViT or Swin with a linear pixel head and masked L1."""

  backbone_types = (vit_lib.ViT, Swin)
  backbone_names = 'vit_tiny/vit_small/vit_base/swin_tiny/swin_small/swin_base'

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(MaskedImageMethod.Hparams):
    mask_ratio: float
    mask_patch_size: int
    head_depth: int
    head_heads: int
    loss: str = 'l1'   # one of losses.SIMMIM_LOSSES
    norm_target_window: int

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.mask_ratio = m.mask_ratio
    self.mask_patch_size = m.mask_patch_size
    size = config.data.image_size
    # Pixels per output token: the ViT's patch, the Swin's last-stage stride. (A Swin's image size
    # is checked with every method's crops in methods.build_method.)
    self.out_stride = getattr(self.backbone, 'out_stride', self.patch_size)
    if self.mask_patch_size % self.out_stride or size % self.mask_patch_size:
      raise ValueError(f'config.method.mask_patch_size={self.mask_patch_size} must be a multiple '
                       f'of the backbone output stride {self.out_stride} (model.patch_size='
                       f'{self.patch_size} for a ViT) and divide data.image_size={size}')
    self.mask_grid = size // self.mask_patch_size
    self.scale = self.mask_patch_size // self.patch_size
    self.out_grid = (size // self.out_stride,) * 2
    self.head = SimMIMHead(self.out_stride ** 2 * 3, depth=m.head_depth, num_heads=m.head_heads)
    self.loss_kind = m.loss
    if self.loss_kind not in losses.SIMMIM_LOSSES:
      raise ValueError(f'config.method.loss={self.loss_kind!r}: use one of '
                       f'{", ".join(losses.SIMMIM_LOSSES)}')
    self.norm_target_window = m.norm_target_window
    if self.norm_target_window and self.norm_target_window % 2 == 0:
      raise ValueError(f'config.method.norm_target_window={self.norm_target_window} must be odd '
                       '(0 = raw pixel targets)')

  def init(self, rng, batch):
    k1, k2, k3 = jax.random.split(rng, 3)
    x = jnp.zeros((2,) + batch['view0'].shape[1:3] + (3,), jnp.float32)
    bb = self.backbone.init({'params': k1}, x)['params']
    d = self.backbone.embed_dim
    n_out, d_out = self.out_grid[0] * self.out_grid[1], models.feature_dim(self.backbone)
    head = self.head.init({'params': k2}, jnp.zeros((2, n_out, d_out)))['params']
    mask_token = 0.02 * jax.random.truncated_normal(k3, -2.0, 2.0, (d,), jnp.float32)
    return {'backbone': bb, 'head': head, 'mask_token': mask_token}, {}

  def views(self, batch, rng):
    k_aug, k_mask = jax.random.split(rng)
    x = self.image(batch, k_aug)
    return {'image': x,
            'mask': simmim_masks(k_mask, x.shape[0], self.mask_grid, self.scale, self.mask_ratio)}

  def predict(self, params, views, *, train=False, rng=None):
    out = self.encode(params, views['image'], train=train, rng=rng, mask=views['mask'],
                      mask_token=params['mask_token'])
    return self.head.apply({'params': params['head']}, out['patches'])

  def output_mask(self, mask):
    """(B, N) input-token mask -> (B, N_out) mask of the output tokens (each output token lies
    inside one mask patch, so taking every r-th input token is exact)."""
    r = self.out_stride // self.patch_size
    if r == 1:
      return mask
    b = mask.shape[0]
    return mask.reshape(b, *self.grid)[:, ::r, ::r].reshape(b, -1)

  def loss(self, params, state, views, rng):
    pred = self.predict(params, views, train=True, rng=rng)
    target = views['image']
    if self.norm_target_window:
      target = losses.local_norm_targets(target, self.norm_target_window)
    target = vit_lib.patchify(target, self.out_stride)
    return (losses.simmim_loss(pred, target, self.output_mask(views['mask']), self.loss_kind),
            ({}, state.buffers))

  def reconstruct(self, params, buffers, images_uint8, rng):
    x = self.normalize(images_uint8)
    v = {'image': x, 'mask': simmim_masks(rng, x.shape[0], self.mask_grid, self.scale,
                                          self.mask_ratio)}
    pred = vit_lib.unpatchify(self.predict(params, v), self.out_stride, *self.out_grid, 3)
    return self._grid_images(x, v['mask'], vit_lib.patchify(pred, self.patch_size))
