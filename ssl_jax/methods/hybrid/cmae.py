"""CMAE (Huang et al., "Contrastive Masked Autoencoders are Stronger Vision Learners", TPAMI 2023,
arXiv 2207.13532): MAE with a momentum-contrastive branch.

Views. One host crop per image (``view0``) of side S + s, S = ``data.image_size``, s =
``method.max_shift`` (the official pipeline: a 256-px random-resized crop for S = 224, s = 31),
cut on device into two S x S windows, so every shape stays static under jit:

* source: the top-left window, only normalised (``aug.recipe[0]``, ``'none'``, as MAE);
* target: the window at a random offset (dy, dx) ~ U{0..s}^2 — "pixel shifting" (Sec. 3.3), a
  positive that overlaps the source almost entirely, unlike two independent random crops — then
  colour-augmented (``aug.recipe[1]``, ``'mocov2'``: jitter 0.4/0.4/0.4/0.1 p 0.8, grey p 0.2,
  blur p 0.5, the augmentation of the official ``CMAEDataset``; the source gets none). A single
  recipe name applies to both views.

Online branch (trained). MAE's encoder on the visible patches of the source, then

* the pixel decoder (MAE's decoder) -> L_r, MSE on the masked patches (optionally per-patch
  normalised pixels);
* the feature decoder: a second :class:`MAEDecoder` (own mask token, own sin-cos position
  embedding, 2 blocks in the paper) predicting an ``embed_dim`` feature for every patch; its
  tokens are mean-pooled -> projector -> predictor = q.

Target branch (EMA, no gradient). The momentum encoder on the *full* (unmasked) target view; the
mean of its patch tokens, taken before the final LayerNorm (the official target encoder runs with
``final_norm=False``) -> momentum projector = k.

Loss (``losses.cmae_loss``)::

    L = L_r + lambda_c * L_c,
    L_c = 2 tau * mean_i -log softmax_j(q_i . k_j / tau)_i       (q, k L2-normalised)

an InfoNCE whose negatives are the other targets of the global batch (under jit the batch is one
global array, so this is the official code's ``concat_all_gather``); the 2 tau factor is the
official code's. Both terms are logged (``loss_recon``, ``loss_contrastive``) with
``contrastive_acc``.

EMA. The momentum encoder is the EMA teacher of ``methods/teacher.py`` (``buffers['teacher']``:
params of backbone and projector, the projector's own BatchNorm statistics). After every update,
teacher <- m teacher + (1 - m) online (``teacher.update``), m = ``teacher.momentum_schedule`` of
the step (cosine from ``momentum`` to ``momentum_final``; the official configs keep 0.996
constant, ``momentum_final = momentum``).

MAE's encoder and pixel decoder come from ``methods/masked_image.MAEStack`` (shared with MAE, one
layer below both families).

Masking (``method.mask_unit``): 1 = MAE's per-patch random masking; 2 = the official code's
masking of whole 2x2 groups of patches (``CMAEViT.random_masking``, ratio 0.65 of the groups).

Eval / export use the online encoder, as MAE (``model.pool``). ``reconstruct`` (the picture
grid) is MAE's and masks per patch.

Config (``config.method``): mask_ratio, mask_unit, norm_pix_loss, decoder_{dim,depth,heads},
feature_decoder_{dim,depth,heads}, proj_{layers,hidden_dim,dim}, pred_{layers,hidden_dim,dim},
temperature, contrastive_weight, momentum, momentum_final, max_shift.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.data import augment, masking
from ssl_jax.data.pipeline import CropSpec
from ssl_jax.methods import common
from ssl_jax.methods import teacher as teacher_lib
from ssl_jax.methods.base import apply_module, init_module
from ssl_jax.methods.common import mlp_from_config
from ssl_jax.methods.masked_image import MAEStack
from ssl_jax.models import vit as vit_lib
from ssl_jax.models.decoders import MAEDecoder


def grouped_random_masking(rng, batch: int, grid, unit: int, mask_ratio: float):
  """Random masking of whole ``unit x unit`` groups of patches (the official CMAE masking for
  unit 2; unit 1 is MAE's per-patch masking).

  Every patch gets the uniform noise of its group; a stable argsort keeps a group's patches
  together, so the first ``unit**2 * int(G (1 - mask_ratio))`` shuffled patches are whole groups.
  Returns MAE's ``{'ids_keep', 'ids_restore', 'mask'}`` (see ``masking.random_masking``).
  """
  gh, gw = grid
  if unit == 1:
    return masking.random_masking(rng, batch, gh * gw, mask_ratio)
  noise = jax.random.uniform(rng, (batch, gh // unit, gw // unit))
  noise = jnp.repeat(jnp.repeat(noise, unit, axis=1), unit, axis=2).reshape(batch, gh * gw)
  k = unit * unit * masking.num_kept((gh // unit) * (gw // unit), mask_ratio)
  ids_shuffle = jnp.argsort(noise, axis=1, stable=True).astype(jnp.int32)
  ids_restore = jnp.argsort(ids_shuffle, axis=1).astype(jnp.int32)
  return {'ids_keep': ids_shuffle[:, :k], 'ids_restore': ids_restore,
          'mask': (ids_restore >= k).astype(jnp.float32)}


def shifted_windows(images, offsets, size: int):
  """(B, size, size, C) windows of ``images`` (B, H, W, C) at per-example ``offsets`` (B, 2) =
  (dy, dx): CMAE's pixel shifting, with a static output shape."""
  c = images.shape[-1]
  return jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (size, size, c)))(
      images, offsets)


class CMAE(MAEStack):
  """MAE + feature decoder, projector and predictor against an EMA encoder of a shifted view."""

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(MAEStack.Hparams, common.ProjectorHparams, common.PredictorHparams,
                teacher_lib.EMAHparams):
    mask_unit: int = 1
    max_shift: int
    feature_decoder_dim: int
    feature_decoder_depth: int
    feature_decoder_heads: int
    temperature: float
    contrastive_weight: float

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.mask_unit = m.mask_unit
    if self.mask_unit < 1 or self.grid[0] % self.mask_unit or self.grid[1] % self.mask_unit:
      raise ValueError(f'config.method.mask_unit={self.mask_unit} must be >= 1 and divide the '
                       f'patch grid {self.grid}')
    groups = self.num_patches // self.mask_unit ** 2
    self.num_keep = self.mask_unit ** 2 * masking.num_kept(groups, self.mask_ratio)
    self.max_shift = m.max_shift
    if not isinstance(self.max_shift, int) or self.max_shift < 0:
      raise ValueError(f'config.method.max_shift={self.max_shift!r} must be an integer >= 0 '
                       '(pixels)')
    self.feature_decoder = MAEDecoder(
        self.grid, self.backbone.embed_dim, m.feature_decoder_dim, m.feature_decoder_depth,
        m.feature_decoder_heads, num_prefix_tokens=self.backbone.num_prefix_tokens,
        dtype=self.backbone.dtype)
    self.projector = mlp_from_config(m, 'proj')
    self.predictor = mlp_from_config(m, 'pred')
    if self.projector is None or self.predictor is None:
      raise ValueError('config.method.proj_layers and pred_layers must be >= 1 for CMAE')
    recipe = config.aug.recipe
    target = recipe if isinstance(recipe, str) else recipe[-1]
    self.target_recipe = augment.get_recipe(target, **dict(config.aug.get('overrides', {})))
    self.temperature = m.temperature
    self.contrastive_weight = m.contrastive_weight
    self.momentum_fn = teacher_lib.momentum_schedule(m, config.train.steps)

  # -- data -------------------------------------------------------------------------------------
  def crop_specs(self):
    d = self.config.data
    return (CropSpec('view0', d.image_size + self.max_shift, tuple(d.crop_scale), flip=d.flip),)

  def mask(self, rng, batch: int):
    return grouped_random_masking(rng, batch, self.grid, self.mask_unit, self.mask_ratio)

  def views(self, batch, rng):
    k_shift, k_src, k_tgt, k_mask = jax.random.split(rng, 4)
    canvas, size = batch['view0'], self.config.data.image_size
    b = canvas.shape[0]
    shift = jax.random.randint(k_shift, (b, 2), 0, self.max_shift + 1)
    return {'image': augment.augment_batch(k_src, canvas[:, :size, :size], self.recipe),
            'target_image': augment.augment_batch(k_tgt, shifted_windows(canvas, shift, size),
                                                  self.target_recipe),
            'shift': shift, **self.mask(k_mask, b)}

  # -- parameters -------------------------------------------------------------------------------
  def init(self, rng, batch):
    del batch  # the host canvas is larger than the image the encoder sees
    k_mae, k_feat, k_proj, k_pred = jax.random.split(rng, 4)
    size, d = self.config.data.image_size, self.backbone.embed_dim
    params, _ = super().init(k_mae, {'view0': jnp.zeros((2, size, size, 3), jnp.uint8)})
    tokens = jnp.zeros((2, self.backbone.num_prefix_tokens + self.num_keep, d), jnp.float32)
    ids = jnp.tile(jnp.arange(self.num_patches, dtype=jnp.int32), (2, 1))
    params['feature_decoder'] = self.feature_decoder.init({'params': k_feat}, tokens, ids)['params']
    params['projector'], proj_stats = init_module(self.projector, k_proj, jnp.zeros((2, d)))
    params['predictor'], pred_stats = init_module(
        self.predictor, k_pred, jnp.zeros((2, self.hp.proj_dim)))
    buffers = {
        'batch_stats': {'projector': proj_stats, 'predictor': pred_stats},
        # The momentum encoder starts as a copy of the online backbone and projector.
        'teacher': teacher_lib.from_student(params, ('backbone', 'projector'),
                                            {'projector': proj_stats}),
    }
    return params, buffers

  # -- loss -------------------------------------------------------------------------------------
  def target_projection(self, target, x):
    """(k, new target buffers): the momentum encoder on the full target view, mean of its patch
    tokens before the final norm, through the momentum projector (train-mode BatchNorm, own
    running statistics); no gradient. ``target`` is ``buffers['teacher']``."""
    out = self.backbone.apply({'params': target['params']['backbone']}, x, train=False,
                              method=vit_lib.ViT.encode, return_layers=True)
    h = out['layers'][-1][:, self.backbone.num_prefix_tokens:].astype(jnp.float32).mean(axis=1)
    k, stats = apply_module(self.projector, target['params']['projector'],
                            teacher_lib.stats_of(target, 'projector'), h, train=True)
    new = teacher_lib.with_stats(target, projector=stats)
    return jax.lax.stop_gradient(k), jax.lax.stop_gradient(new)

  def loss(self, params, state, views, rng):
    out = self.encode(params, views['image'], train=True, rng=rng, ids_keep=views['ids_keep'])
    pixels = self.decoder.apply({'params': params['decoder']}, out['tokens'], views['ids_restore'])
    feats = self.feature_decoder.apply({'params': params['feature_decoder']}, out['tokens'],
                                       views['ids_restore'])
    stats = state.buffers['batch_stats']
    z, proj_stats = apply_module(self.projector, params['projector'], stats['projector'],
                                 feats.mean(axis=1), train=True)
    q, pred_stats = apply_module(self.predictor, params['predictor'], stats['predictor'], z,
                                 train=True)
    k, target = self.target_projection(state.buffers['teacher'], views['target_image'])
    loss, metrics = losses.cmae_loss(
        pixels, vit_lib.patchify(views['image'], self.patch_size), views['mask'], q, k,
        self.temperature, self.contrastive_weight, self.norm_pix_loss)
    buffers = dict(state.buffers, teacher=target,
                   batch_stats={'projector': proj_stats, 'predictor': pred_stats})
    return loss, (metrics, buffers)

  def after_update(self, state):
    """Teacher (backbone, projector) <- m teacher + (1 - m) online, m = momentum(step of the
    update just made)."""
    return teacher_lib.update(state, self.momentum_fn)
