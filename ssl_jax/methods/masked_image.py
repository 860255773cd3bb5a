"""The masked-image pieces that more than one method family builds on: :class:`MaskedImageMethod`
(the base of MAE, SimMIM, BEiT, MultiMAE and CMAE) and :class:`MAEStack` (MAE's visible-only
encoder and pixel decoder, which MAE and CMAE share).

Here, one layer below the method families, so that ``masked/`` and ``hybrid/`` build on them
without importing each other (docs/architecture.md; tests/test_layering.py).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssl_jax.data import augment, masking
from ssl_jax.methods.base import Method
from ssl_jax.models import vit as vit_lib
from ssl_jax.models.decoders import MAEDecoder


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


class MAEStack(MaskedImageMethod):
  """MAE's online stack: the ViT encoder on the visible patches and the pixel decoder
  (``init``, ``predict``, ``reconstruct``); MAE (``masked/mae.py``) adds its views and loss, CMAE
  (``hybrid/cmae.py``) its contrastive branch."""

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(MaskedImageMethod.Hparams):
    mask_ratio: float
    norm_pix_loss: bool
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.mask_ratio = m.mask_ratio
    self.num_keep = masking.num_kept(self.num_patches, self.mask_ratio)
    self.norm_pix_loss = m.norm_pix_loss
    self.decoder = MAEDecoder(self.grid, self.patch_dim, m.decoder_dim, m.decoder_depth,
                              m.decoder_heads, num_prefix_tokens=self.backbone.num_prefix_tokens,
                              dtype=self.backbone.dtype)

  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    x = jnp.zeros((2,) + batch['view0'].shape[1:3] + (3,), jnp.float32)
    bb = self.backbone.init({'params': k1}, x)['params']
    tokens = jnp.zeros((2, self.backbone.num_prefix_tokens + self.num_keep,
                        self.backbone.embed_dim), jnp.float32)
    ids = jnp.tile(jnp.arange(self.num_patches, dtype=jnp.int32), (2, 1))
    dec = self.decoder.init({'params': k2}, tokens, ids)['params']
    return {'backbone': bb, 'decoder': dec}, {}

  def predict(self, params, views, *, train=False, rng=None):
    """Encoder on the visible patches -> decoder -> (B, N, p*p*3) predicted patches."""
    out = self.encode(params, views['image'], train=train, rng=rng, ids_keep=views['ids_keep'])
    return self.decoder.apply({'params': params['decoder']}, out['tokens'], views['ids_restore'])

  def reconstruct(self, params, buffers, images_uint8, rng):
    x = self.normalize(images_uint8)
    v = {'image': x, **masking.random_masking(rng, x.shape[0], self.num_patches, self.mask_ratio)}
    pred = self.predict(params, v)
    if self.norm_pix_loss:  # predictions are per-patch normalised: undo with the target's stats
      t = vit_lib.patchify(x, self.patch_size)
      pred = pred * jnp.sqrt(t.var(-1, keepdims=True, ddof=1) + 1e-6) + t.mean(-1, keepdims=True)
    return self._grid_images(x, v['mask'], pred)
