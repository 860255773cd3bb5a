"""MultiMAE (Bachmann et al., "MultiMAE: Multi-modal Multi-task Masked Autoencoders", ECCV 2022).

Several image-aligned modalities are patchified, each with its own linear patch embedding (RGB uses
the ViT's own ``patch_embed``; every other modality an "input adapter"), all get the same patch
position embeddings and are concatenated into one token set. A fixed number K of tokens is kept
per image, *allocated across modalities by a Dirichlet sample* (the paper's
``sample_alphas`` with concentration ``alpha = 1``): with lambda ~ Dir(alpha), modality m gets
round(lambda_m K) tokens chosen uniformly among its N patches; since the rounded shares need not
sum to K, the K tokens actually encoded are the first K of an argsort of (masked + small noise) —
exactly the paper's code — which keeps shapes static under jit. The shared ViT encoder runs on the
K visible tokens only; one decoder per modality (:class:`ssl_jax.models.decoders.MultiMAEDecoder`:
cross-attention to all encoded tokens, then transformer blocks) predicts its masked patches, and the
loss is the sum over modalities of the MAE masked MSE (``losses.mae_loss``).

Built-in modalities (``config.method.modalities``), all computed on device from the crop:

* ``'rgb'`` — the normalised image (target optionally per-patch normalised, ``norm_pix_loss``);
* ``'edges'`` — Sobel gradient magnitude of the grey image, a pseudo-modality the built-in data
  can provide (the paper used pseudo-labelled depth and segmentation);
* ``'channels:a:b'`` — channels ``a..b-1`` of the host crop, for a user's data that carries extra
  channels. A source whose records have ``image`` of shape (H, W, C) with C > 3 (e.g. RGB + depth
  stored as a 4th channel: ``sources.ArraySource(images_rgbd, labels, ...)``) is cropped and
  resized like RGB by the host pipeline; ``modalities=('rgb', 'channels:3:4')`` then uses the depth
  channel as a second modality. ``'rgb'`` always reads channels 0..2.

To add another computed modality, add an entry to :data:`MODALITIES`: a channel count and a jnp
function of the [0, 1] float crop (B, H, W, C) returning (B, H, W, channels).

Non-RGB modalities are standardised per image (zero mean, unit variance) as inputs and targets.
Eval features are those of the RGB-only encoder (the ViT as is), so export is a plain ViT.

Config (``config.method``): modalities, mask_ratio (of all M x N tokens), dirichlet_alpha,
decoder_dim, decoder_depth, decoder_heads, norm_pix_loss.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.data import augment
from ssl_jax.data.image_ops import sobel_edges
from ssl_jax.data import masking
from ssl_jax.methods.masked import MaskedImageMethod
from ssl_jax.models import vit as vit_lib
from ssl_jax.models.decoders import MultiMAEDecoder

# ----------------------------------------------------------------------------- modalities

@dataclasses.dataclass(frozen=True)
class Modality:
  channels: int
  fn: Callable  # (B, H, W, C) float in [0, 1] -> (B, H, W, channels)


MODALITIES = {'edges': Modality(1, sobel_edges)}


def get_modality(name: str) -> Modality:
  if name.startswith('channels:'):
    _, a, b = name.split(':')
    a, b = int(a), int(b)
    return Modality(b - a, lambda x: x[..., a:b])
  if name not in MODALITIES:
    raise ValueError(f'config.method.modalities: unknown modality {name!r}; use rgb, '
                     f'{", ".join(MODALITIES)} or channels:a:b')
  return MODALITIES[name]


def standardize(x, eps=1e-6):
  """Per-image zero-mean unit-variance over (H, W, C)."""
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  return (x - mean) / jnp.sqrt(x.var(axis=(1, 2, 3), keepdims=True) + eps)


def dirichlet_masking(rng, batch: int, num_patches: int, num_modalities: int, num_keep: int,
                      alpha: float = 1.0):
  """MultiMAE token allocation (Bachmann et al. 2022, Sec. 3.2; ``generate_random_masks``).

  Returns ids_keep (B, K), ids_restore (B, M*N), mask (B, M*N) 1 = not encoded, and alphas
  (B, M) the Dirichlet shares; token m*N + j is patch j of modality m.
  """
  k_dir, k_noise, k_order = jax.random.split(rng, 3)
  alphas = jax.random.dirichlet(k_dir, jnp.full((num_modalities,), alpha), (batch,))
  per_mod = jnp.round(alphas * num_keep)
  masks = []
  for m in range(num_modalities):
    noise = jax.random.uniform(jax.random.fold_in(k_noise, m), (batch, num_patches))
    rank = jnp.argsort(jnp.argsort(noise, axis=1), axis=1)
    masks.append((rank >= per_mod[:, m:m + 1]).astype(jnp.float32))
  chosen = jnp.concatenate(masks, axis=1)
  noise = jax.random.uniform(k_order, chosen.shape)
  ids_shuffle = jnp.argsort(chosen + 1e-2 * noise, axis=1).astype(jnp.int32)
  ids_restore = jnp.argsort(ids_shuffle, axis=1).astype(jnp.int32)
  return {'ids_keep': ids_shuffle[:, :num_keep], 'ids_restore': ids_restore,
          'mask': (ids_restore >= num_keep).astype(jnp.float32), 'alphas': alphas}


def _encode_tokens(vit, rgb, others, ids_keep, train):
  """Inside ``ViT.apply(..., method=...)``: RGB through the ViT's patch_embed, other modalities'
  embedded patches given, + position embedding, keep ``ids_keep``, prefix tokens, blocks, norm."""
  b = rgb.shape[0]
  d = vit.embed_dim
  pe = vit._pos_embed_for(vit.grid_size)  # pylint: disable=protected-access
  p = vit.num_prefix_tokens
  toks = [vit.patch_embed(rgb).reshape(b, -1, d)] + list(others)
  x = jnp.concatenate([t + pe[:, p:] for t in toks], axis=1)
  x = jnp.take_along_axis(x, ids_keep[..., None], axis=1)
  if p:
    prefix = vit._prefix_tokens(b)  # pylint: disable=protected-access
    x = jnp.concatenate([prefix + pe[:, :p], x], axis=1)
  for blk in vit.blocks:
    x = blk(x, train, False)
  return vit.norm(x)


class MultiMAE(MaskedImageMethod):
  """RGB + other modalities, Dirichlet token allocation, shared ViT, per-modality decoders."""

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(MaskedImageMethod.Hparams):
    modalities: tuple[str, ...]   # 'rgb' first
    mask_ratio: float
    dirichlet_alpha: float
    norm_pix_loss: bool
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.names = tuple(m.modalities)
    if not self.names or self.names[0] != 'rgb':
      raise ValueError(f"config.method.modalities={self.names}: the first modality must be 'rgb'")
    self.extra = {n: get_modality(n) for n in self.names[1:]}
    self.num_keep = masking.num_kept(len(self.names) * self.num_patches, m.mask_ratio)
    if self.num_keep >= self.num_patches:
      raise ValueError(f'config.method.mask_ratio={m.mask_ratio} keeps {self.num_keep} tokens, '
                       f'not fewer than one modality\'s {self.num_patches}')
    self.alpha = m.dirichlet_alpha
    self.norm_pix_loss = m.norm_pix_loss
    p2 = self.patch_size ** 2
    self.patch_dims = (3 * p2,) + tuple(mod.channels * p2 for mod in self.extra.values())
    self.input_adapter = vit_lib.PatchEmbed(self.patch_size, self.backbone.embed_dim)
    self.decoder = MultiMAEDecoder(self.grid, self.names, self.patch_dims, m.decoder_dim,
                                   m.decoder_depth, m.decoder_heads,
                                   self.backbone.num_prefix_tokens)

  def init(self, rng, batch):
    keys = jax.random.split(rng, 2 + len(self.extra))
    size = batch['view0'].shape[1:3]
    bb = self.backbone.init({'params': keys[0]}, jnp.zeros((2,) + size + (3,)))['params']
    adapters = {f'input_adapter_{i + 1}': self.input_adapter.init(
        keys[2 + i], jnp.zeros((2,) + size + (mod.channels,)))['params']
                for i, mod in enumerate(self.extra.values())}
    tokens = jnp.zeros((2, self.backbone.num_prefix_tokens + self.num_keep,
                        self.backbone.embed_dim))
    ids = jnp.tile(jnp.arange(len(self.names) * self.num_patches, dtype=jnp.int32), (2, 1))
    dec = self.decoder.init({'params': keys[1]}, tokens, ids[:, :self.num_keep], ids)['params']
    return {'backbone': bb, 'input_adapters': adapters, 'decoder': dec}, {}

  def inputs(self, batch_view, rgb):
    """{name: (B, H, W, C) float}: normalised RGB and the standardised other modalities."""
    x01 = batch_view.astype(jnp.float32) / 255.0
    out = {'rgb': rgb}
    for name, mod in self.extra.items():
      out[name] = standardize(mod.fn(x01))
    return out

  def views(self, batch, rng):
    k_aug, k_mask = jax.random.split(rng)
    rgb = augment.augment_batch(k_aug, batch['view0'][..., :3], self.recipe)
    v = self.inputs(batch['view0'], rgb)
    v.update(dirichlet_masking(k_mask, rgb.shape[0], self.num_patches, len(self.names),
                               self.num_keep, self.alpha))
    return v

  def predict(self, params, views, *, train=False, rng=None):
    b, d = views['rgb'].shape[0], self.backbone.embed_dim
    others = [self.input_adapter.apply({'params': params['input_adapters'][f'input_adapter_{i}']},
                                       views[name]).reshape(b, -1, d)
              for i, name in enumerate(self.names[1:], start=1)]
    rngs = {'dropout': rng} if rng is not None else None
    tokens = self.backbone.apply({'params': params['backbone']}, views['rgb'], others,
                                 views['ids_keep'], train, rngs=rngs, method=_encode_tokens)
    return self.decoder.apply({'params': params['decoder']}, tokens, views['ids_keep'],
                              views['ids_restore'])

  def loss(self, params, state, views, rng):
    preds = self.predict(params, views, train=True, rng=rng)
    n, total, metrics = self.num_patches, 0.0, {}
    for i, name in enumerate(self.names):
      target = vit_lib.patchify(views[name], self.patch_size)
      mask = views['mask'][:, i * n:(i + 1) * n]
      norm_pix = self.norm_pix_loss and name == 'rgb'
      metrics[f'loss_{name}'] = losses.mae_loss(preds[name], target, mask, norm_pix)
      metrics[f'visible_frac_{name}'] = 1.0 - mask.mean()
      total = total + metrics[f'loss_{name}']
    return total, (metrics, state.buffers)

  def features(self, params, buffers, images_uint8):
    """The RGB-only encoder (extra channels of a user's images are ignored)."""
    return super().features(params, buffers, images_uint8[..., :3])

  def reconstruct(self, params, buffers, images_uint8, rng):
    rgb = self.normalize(images_uint8[..., :3])
    v = self.inputs(images_uint8, rgb)
    v.update(dirichlet_masking(rng, rgb.shape[0], self.num_patches, len(self.names),
                               self.num_keep, self.alpha))
    pred = self.predict(params, v)['rgb']
    if self.norm_pix_loss:
      t = vit_lib.patchify(rgb, self.patch_size)
      pred = pred * jnp.sqrt(t.var(-1, keepdims=True, ddof=1) + 1e-6) + t.mean(-1, keepdims=True)
    return self._grid_images(rgb, v['mask'][:, :self.num_patches], pred)
