"""SiT: Self-supervised vIsion Transformer (Atito, Awais & Kittler, arXiv:2104.03602, 2021).

A ViT whose [CLS] token is replaced by two prefix tokens, a *rotation* token and a *contrastive*
token (both with position embeddings; ``ViT(num_prefix_tokens=2)`` lays them out as timm's
``cls_token`` + ``reg_token``; the config says so with ``model.num_prefix_tokens=2`` and
``model.pool_token=1``, so fine-tuning and export build the same ViT), trained on three tasks at
once:

1. reconstruction: the input is a *corrupted* version of the (rotated) image — rectangular blocks
   of connected patches are randomly dropped (zeroed), replaced by another image's pixels,
   blurred, turned grey or recoloured (Sec. 3.1) — and a linear decoder maps every patch token back
   to its pixels; loss = L1 to the clean rotated image, over all pixels;
2. rotation prediction: each view is rotated by a random multiple of 90 degrees and a linear head
   on the rotation token classifies it (4-way cross-entropy);
3. contrastive: an MLP projects the contrastive token of two augmented views of every image and
   NT-Xent with temperature 0.5 (``losses.nt_xent``) pulls them together.

The three losses are combined with learned homoscedastic-uncertainty weights (Kendall et al. 2018,
``losses.uncertainty_weighted_sum``): ``0.5 exp(-s) L + s / 2`` for the L1 reconstruction
(regression form) and ``exp(-s) L + s / 2`` for the two cross-entropies (classification form), as
in the official code's ``LearnedLoss``; the weights are logged every step as ``weight_recon``,
``weight_rotation``, ``weight_contrastive``.

The frozen-encoder feature (kNN, export) is the contrastive token's final-normed output.

Config (``config.method``): temperature, proj_hidden_dim, proj_dim, proj_bn (BatchNorm in the
projector's hidden layer; the paper's head has none), corrupt_blocks, corrupt_max_frac, task_scale
(3 loss multipliers, 1.0 = off; for tests and ablations).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.data import augment
from ssl_jax.data.image_ops import NUM_ROTATIONS, rotate90_per_example
from ssl_jax.methods.base import Method, apply_module, init_module
from ssl_jax.models.cpu.dense import Dense
from ssl_jax.models.heads import MLP
from ssl_jax.models.vit import ViT, unpatchify

TASKS = ('recon', 'rotation', 'contrastive')
CLASSIFICATION = (False, True, True)   # L1 regression; rotation and NT-Xent are cross-entropies
CORRUPTIONS = ('drop', 'replace', 'blur', 'grayscale', 'recolour')


def block_mask(key, height: int, width: int, max_frac: float):
  """(H, W) bool mask of one random axis-aligned rectangle with sides in [1, max_frac * side]."""
  k1, k2, k3, k4 = jax.random.split(key, 4)
  mh, mw = max(1, int(height * max_frac)), max(1, int(width * max_frac))
  bh = jax.random.randint(k1, (), 1, mh + 1)
  bw = jax.random.randint(k2, (), 1, mw + 1)
  y0 = jax.random.randint(k3, (), 0, height - bh + 1)
  x0 = jax.random.randint(k4, (), 0, width - bw + 1)
  yy, xx = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  return (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)


def corrupt_image(key, img, other, num_blocks: int = 3, max_frac: float = 0.5):
  """SiT's image corruption of an HWC image in [0, 1] (Sec. 3.1).

  ``num_blocks`` random rectangles of connected pixels are each, with a corruption drawn
  uniformly from ``CORRUPTIONS``: dropped (set to 0), replaced by the same region of ``other``
  (another image of the batch), Gaussian-blurred (sigma ~ U[1, 2]), turned grey, or recoloured
  (hue shift ~ U[-0.5, 0.5], brightness ~ U[0.5, 1.5]). Returns (corrupted, union mask (H, W)).
  """
  h, w, _ = img.shape
  k_blur, k_hue, k_bright, k_blocks = jax.random.split(key, 4)
  ksize = augment.blur_kernel_size(h, 0.2)
  sigma = jax.random.uniform(k_blur, (), jnp.float32, 1.0, 2.0)
  recolour = augment.adjust_brightness(
      augment.adjust_hue(img, jax.random.uniform(k_hue, (), jnp.float32, -0.5, 0.5)),
      jax.random.uniform(k_bright, (), jnp.float32, 0.5, 1.5))
  candidates = jnp.stack([jnp.zeros_like(img), other,
                          augment.apply_gaussian_blur(img, sigma, ksize, 'reflect'),
                          augment.rgb_to_grayscale(img), recolour])
  out, union = img, jnp.zeros((h, w), bool)
  for kb in jax.random.split(k_blocks, num_blocks):
    k_mask, k_kind = jax.random.split(kb)
    mask = block_mask(k_mask, h, w, max_frac)
    kind = jax.random.randint(k_kind, (), 0, len(CORRUPTIONS))
    replacement = jnp.take(candidates, kind, axis=0)
    out = jnp.where(mask[..., None], replacement, out)
    union = union | mask
  return out, union


class LinearDecoder(nn.Module):
  """Patch tokens (B, N, D) -> pixels (B, N, p*p*C): one Dense layer (SiT's reconstruction head)."""
  patch_dim: int

  @nn.compact
  def __call__(self, tokens, train: bool = False):
    del train
    return Dense(self.patch_dim, name='proj')(tokens).astype(jnp.float32)


class SiT(Method):
  """SiT: reconstruction + rotation + contrastive, uncertainty-weighted."""

  num_views = 2
  normalize_views = False   # corruption ops assume [0, 1]; normalised after corrupting

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams):
    temperature: float = 0.5
    proj_hidden_dim: int
    proj_dim: int
    proj_bn: bool = False
    task_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    corrupt_blocks: int = 3
    corrupt_max_frac: float = 0.5

  def __init__(self, config):
    super().__init__(config)
    if not isinstance(self.backbone, ViT):
      raise ValueError(f'SiT needs a ViT backbone (config.model.backbone=vit_*), '
                       f'got {config.model.backbone!r}')
    if self.backbone.num_prefix_tokens != 2:
      raise ValueError(f'SiT needs two prefix tokens (rotation, contrastive): set '
                       f'config.model.num_prefix_tokens=2 (got {self.backbone.num_prefix_tokens})'
                       ' and config.model.pool_token=1, as configs/sit.py does')
    m = self.hp
    self.temperature = m.temperature
    self.patch = self.backbone.patch_size
    self.rot_head = nn.Dense(NUM_ROTATIONS, name='rotation_head')
    self.projector = MLP(hidden_dims=(m.proj_hidden_dim,), out_dim=m.proj_dim,
                         use_bn=m.proj_bn)
    self.decoder = LinearDecoder(self.patch * self.patch * 3)
    self.task_scale = m.task_scale
    # The eval-time normalisation of ``Method.normalize``.
    self.mean, self.std = augment.IMAGENET_MEAN, augment.IMAGENET_STD

  def views(self, batch, rng):
    k_aug, k_rest = jax.random.split(rng)
    clean = super().views(batch, k_aug)
    m = self.hp
    out = {}
    for i, key in enumerate(jax.random.split(k_rest, self.num_views)):
      x = clean[f'view{i}']
      k_rot, k_cor = jax.random.split(key)
      ks = jax.random.randint(k_rot, (x.shape[0],), 0, NUM_ROTATIONS)
      x = rotate90_per_example(x, ks)
      other = jnp.roll(x, 1, axis=0)
      keys = jax.random.split(k_cor, x.shape[0])
      corrupted, _ = jax.vmap(lambda k, a, b: corrupt_image(
          k, a, b, m.corrupt_blocks, m.corrupt_max_frac))(keys, x, other)
      out[f'input{i}'] = augment.normalize(corrupted, self.mean, self.std)
      out[f'target{i}'] = augment.normalize(x, self.mean, self.std)
      out[f'rotation{i}'] = ks
    return out

  def init(self, rng, batch):
    ks = jax.random.split(rng, 4)
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    d = self.backbone.embed_dim
    bb, _ = init_module(self.backbone, ks[0], x)
    proj_params, proj_stats = init_module(self.projector, ks[2], jnp.zeros((2, d)))
    params = {
        'backbone': bb,
        'rotation_head': self.rot_head.init(ks[1], jnp.zeros((2, d)))['params'],
        'projector': proj_params,
        'decoder': init_module(self.decoder, ks[3], jnp.zeros((2, 1, d)))[0],
        'log_vars': jnp.zeros((len(TASKS),), jnp.float32),
    }
    return params, ({'batch_stats': {'projector': proj_stats}} if proj_stats else {})

  def _encode(self, params, x, rng):
    return self.backbone.apply({'params': params['backbone']}, x, train=True,
                               method=ViT.encode, rngs={'dropout': rng})

  def loss(self, params, state, views, rng):
    x = jnp.concatenate([views['input0'], views['input1']], axis=0)
    target = jnp.concatenate([views['target0'], views['target1']], axis=0)
    rot = jnp.concatenate([views['rotation0'], views['rotation1']], axis=0)
    out = self._encode(params, x, rng)
    # 1. reconstruction of the clean image from every patch token, L1 over all pixels.
    pixels = self.decoder.apply({'params': params['decoder']}, out['patches'])
    h, w, c = target.shape[1:]
    recon = unpatchify(pixels, self.patch, h // self.patch, w // self.patch, c)
    l_recon = jnp.mean(jnp.abs(recon - target))
    # 2. rotation prediction from token 0.
    logits = self.rot_head.apply({'params': params['rotation_head']}, out['prefix'][:, 0])
    l_rot, rot_acc = losses.pretext_cross_entropy(logits, rot)
    # 3. NT-Xent on token 1 between the two views.
    stats = state.buffers.get('batch_stats', {}).get('projector', {})
    z, stats = apply_module(self.projector, params['projector'], stats, out['prefix'][:, 1],
                            train=True)
    z1, z2 = jnp.split(z, 2, axis=0)
    l_con, con_acc = losses.nt_xent(z1, z2, self.temperature)
    task_losses = jnp.stack([l_recon, l_rot, l_con]) * jnp.asarray(self.task_scale, jnp.float32)
    total, weights = losses.uncertainty_weighted_sum(task_losses, params['log_vars'],
                                                     classification=CLASSIFICATION)
    metrics = {'rotation_acc': rot_acc, 'contrastive_acc': con_acc}
    for i, name in enumerate(TASKS):
      metrics[f'loss_{name}'] = task_losses[i]
      metrics[f'weight_{name}'] = weights[i]
    buffers = dict(state.buffers, batch_stats={'projector': stats}) if stats else state.buffers
    return total, (metrics, buffers)

  # ``features`` is the base class's: the backbone's pooled output, the contrastive token (token 1)
  # with configs/sit.py's ``model.pool_token=1``, so the exported encoder gives the same feature.
