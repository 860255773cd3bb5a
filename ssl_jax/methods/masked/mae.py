"""MAE (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022).

Per image, a random 75 % of the patches is removed (argsort of uniform noise, so K = N/4 visible
patches and every shape is static under jit); the ViT encoder runs on the K visible patches only
(plus [CLS]); a light decoder (:class:`ssl_jax.models.decoders.MAEDecoder`) appends mask tokens,
restores the image order, adds its own fixed sin-cos position embedding and predicts every patch's
pixels; the loss (``losses.mae_loss``) is the MSE on the removed patches only, optionally against
per-patch normalised pixels (``norm_pix_loss``).

Paper settings the configs use: sin-cos position embeddings (``model.pos_embed='sincos'``), MAE's
initialisation (xavier-uniform linears and patch projection, N(0, 0.02) tokens — the ViT and the
decoder already initialise so), AdamW with betas (0.9, 0.95), weight decay 0.05,
lr = 1.5e-4 x B/256, decoder 512-d x 8 blocks. :func:`layer_decay_multipliers` / :func:`scale_by_layer_decay` give the
layer-wise lr decay used when fine-tuning the encoder (BEiT / MAE fine-tuning recipe).

Config (``config.method``): mask_ratio, norm_pix_loss, decoder_dim, decoder_depth, decoder_heads,
eval pooling ``model.pool`` ('mean' | 'token', see :class:`MaskedImageMethod`).
"""
from __future__ import annotations

import re

import jax
import optax

from ssl_jax import losses
from ssl_jax.data import masking
from ssl_jax.methods.masked_image import MAEStack
from ssl_jax.models import vit as vit_lib


class MAE(MAEStack):
  """Masked autoencoder: visible-only encoder, light decoder, masked-patch MSE (the encoder and
  decoder are ``methods/masked_image.MAEStack``, shared with CMAE)."""

  def views(self, batch, rng):
    k_aug, k_mask = jax.random.split(rng)
    x = self.image(batch, k_aug)
    return {'image': x, **masking.random_masking(k_mask, x.shape[0], self.num_patches,
                                                 self.mask_ratio)}

  def loss(self, params, state, views, rng):
    pred = self.predict(params, views, train=True, rng=rng)
    target = vit_lib.patchify(views['image'], self.patch_size)
    loss = losses.mae_loss(pred, target, views['mask'], self.norm_pix_loss)
    return loss, ({}, state.buffers)


# ----------------------------------------------------------------------------- fine-tuning

def layer_id(path: str, depth: int) -> int:
  """BEiT/MAE layer id of a ViT parameter: patch embedding, [CLS], position embedding -> 0;
  ``blocks_i`` -> i + 1; anything after the blocks (final norm, head) -> depth + 1."""
  if re.search(r'(patch_embed|cls_token|reg_token|pos_embed|mask_token)', path):
    return 0
  match = re.search(r'blocks_(\d+)', path)
  return int(match.group(1)) + 1 if match else depth + 1


def layer_decay_multipliers(params, depth: int, decay: float):
  """Per-leaf lr multipliers ``decay ** (depth + 1 - layer_id)`` (Bao et al. 2022 BEiT, Clark et
  al. 2020 ELECTRA; MAE fine-tunes with decay 0.75 for ViT-B)."""
  flat = jax.tree_util.tree_flatten_with_path(params)
  mults = [decay ** (depth + 1 - layer_id(jax.tree_util.keystr(k), depth)) for k, _ in flat[0]]
  return jax.tree_util.tree_unflatten(flat[1], mults)


def scale_by_layer_decay(multipliers) -> optax.GradientTransformation:
  """Scales each leaf's update by its multiplier; chain it after an optimizer (e.g. AdamW) to get
  layer-wise lr decay (the decoupled weight decay of AdamW is scaled alike, as in BEiT)."""
  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map(lambda u, m: u * m, updates, multipliers), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
