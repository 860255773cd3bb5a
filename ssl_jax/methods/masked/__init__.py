"""Masked image modelling: MAE, SimMIM, BEiT (with its VQ-VAE tokenizer) and MultiMAE.

All four pretrain a ViT from one view per image (``view0``, a random-resized crop made on the host)
that is normalised on device; they differ in what is hidden and what is predicted:

=========  ==========================================  ==========================================
method     encoder input                               target (masked patches only)
=========  ==========================================  ==========================================
MAE        visible patches only (75 % removed)          pixels (optionally per-patch normalised)
SimMIM     all positions, mask token on masked ones     raw pixels, L1
BEiT       all positions, mask token (block-wise 40 %)  the VQ tokenizer's code index, cross-entropy
MultiMAE   visible tokens of RGB + other modalities     pixels of every modality
=========  ==========================================  ==========================================

:class:`MaskedImageMethod` holds what they share: the ViT check, the single crop, normalisation,
eval features (the encoder on *all* patches, no mask) and reconstruction-grid helpers used by
``python -m ssl_jax.viz.reconstruction``.
"""
from __future__ import annotations


import jax.numpy as jnp

from ssl_jax.data import augment
from ssl_jax.methods.base import Method
from ssl_jax.models import vit as vit_lib


class MaskedImageMethod(Method):
  """Base of the masked-image methods: one crop, a ViT backbone, pooled-feature eval.

  ``config.model.pool`` (a backbone field, so export and fine-tuning pool the same way) chooses
  the eval/export feature: ``'mean'`` (the configs' choice) averages the final-normed patch tokens
  of the unmasked image — MAE fine-tunes with global average pooling and it gives much better kNN
  than [CLS] for reconstruction-trained encoders, whose [CLS] token gets no direct training
  signal; ``'token'`` uses the [CLS] token (MAE's linear-probe protocol).
  """

  num_views = 1
  # Backbone classes the method can mask, and the names to suggest when it gets another one.
  backbone_types: tuple = (vit_lib.ViT,)
  backbone_names = 'vit_tiny/vit_small/vit_base'

  def __init__(self, config):
    super().__init__(config)
    if not isinstance(self.backbone, self.backbone_types):
      raise ValueError(f'config.model.backbone={config.model.backbone!r}: '
                       f'{type(self).__name__} needs one of {self.backbone_names}')
    self.patch_size = self.backbone.patch_size
    size = config.data.image_size
    if size % self.patch_size:
      raise ValueError(f'config.data.image_size={size} is not a multiple of '
                       f'model.patch_size={self.patch_size}')
    self.grid = (size // self.patch_size, size // self.patch_size)
    self.num_patches = self.grid[0] * self.grid[1]
    self.patch_dim = self.patch_size ** 2 * 3
    recipe = config.aug.recipe if isinstance(config.aug.recipe, str) else config.aug.recipe[0]
    self.recipe = augment.get_recipe(recipe, **dict(config.aug.get('overrides', {})))

  def image(self, batch, rng):
    """The normalised (B, H, W, 3) float image of the single view."""
    return augment.augment_batch(rng, batch['view0'], self.recipe)

  def encode(self, params, x, *, train=False, rng=None, **kw):
    """The backbone's ``encode`` (dict of tokens/prefix/patches)."""
    rngs = {'dropout': rng} if rng is not None else None
    return self.backbone.apply({'params': params['backbone']}, x, train=train, rngs=rngs,
                               method=type(self.backbone).encode, **kw)

  # ``features`` is the base class's: the backbone on all patches (no mask), pooled per
  # ``config.model.pool`` -- exactly what the exported encoder computes.

  # -- reconstruction pictures -----------------------------------------------------------------
  def denormalize(self, x):
    """Normalised images -> [0, 1] (inverse of the recipe's mean/std)."""
    if 'mean' in self.recipe:
      x = x * jnp.asarray(self.recipe['std']) + jnp.asarray(self.recipe['mean'])
    return jnp.clip(x, 0.0, 1.0)

  def patch_mask_image(self, mask):
    """(B, N) patch mask -> (B, H, W, 1) pixel mask."""
    ones = jnp.ones(mask.shape + (self.patch_size ** 2,), jnp.float32) * mask[..., None]
    return vit_lib.unpatchify(ones, self.patch_size, *self.grid, 1)

  def reconstruct(self, params, buffers, images_uint8, rng):
    """{'original', 'masked', 'reconstruction'}: (B, H, W, 3) float images in [0, 1]."""
    raise NotImplementedError(f'{type(self).__name__} has no pixel reconstruction')

  def _grid_images(self, x, mask, pred_patches):
    """Original / masked (grey where hidden) / visible pixels pasted over the prediction."""
    m = self.patch_mask_image(mask)
    pred = vit_lib.unpatchify(pred_patches, self.patch_size, *self.grid, 3)
    orig = self.denormalize(x)
    return {'original': orig, 'masked': orig * (1 - m) + 0.5 * m,
            'reconstruction': orig * (1 - m) + self.denormalize(pred) * m}

