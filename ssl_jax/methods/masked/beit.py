"""BEiT (Bao et al., "BEiT: BERT Pre-Training of Image Transformers", ICLR 2022).

A discrete visual tokenizer — here the library's own VQ-VAE (``methods/masked/vq_tokenizer.py``,
trained first as the ``vqvae`` method; BEiT used DALL-E's dVAE) — maps every image to one code per
ViT patch. About 40 % of the patches are hidden by *block-wise* masking; the ViT sees all positions
with a learned mask token on the hidden ones, and a linear head over the vocabulary predicts each
hidden patch's code: cross-entropy on the masked patches only (``losses.masked_cross_entropy``).

The frozen tokenizer params live in the method buffers (``buffers['tokenizer']``), read when the
method is built from the latest checkpoint of ``config.method.tokenizer_workdir`` (a clear error
names the command to run when there is none, or when its sizes differ from
``config.method.tokenizer``); they are also saved in BEiT's own checkpoints, and a resumed run
restores them from there. ``config.method.tokenizer_random_init=True`` (tests only) uses a randomly
initialised tokenizer instead.

Block-wise masks are drawn on device with :func:`blockwise_masks_device`, a jittable version of
BEiT's Algorithm 1 (the numpy reference is ``data.masking.blockwise_mask``). Not reproduced from
the paper: relative position bias and layer scale in the ViT (the shared ViT has neither).

Config (``config.method``): mask_ratio (0.4), min_mask_patches (16 in BEiT), mask_attempts,
tokenizer (VQ-VAE sizes, see ``vq_tokenizer.TOKENIZERS``), tokenizer_workdir (eval pooling: ``model.pool``).
"""
from __future__ import annotations

import dataclasses

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods.masked import MaskedImageMethod
from ssl_jax.methods.masked import vq_tokenizer
from ssl_jax.models.cpu.dense import Dense


def blockwise_masks_device(rng, batch: int, grid_h: int, grid_w: int, num_masking_patches: int,
                           min_num_patches: int = 16, max_num_patches: int | None = None,
                           min_aspect: float = 0.3, max_aspect: float | None = None,
                           attempts: int = 50):
  """BEiT block-wise masking (Bao et al. 2022, Algorithm 1), jittable: (B, grid_h * grid_w) float.

  Each of ``attempts`` tries draws a block of area ``s ~ U[min_num_patches, remaining]`` (capped by
  ``max_num_patches``), log-uniform aspect ``r`` in [min_aspect, 1/min_aspect], side
  ``h = round(sqrt(s r))``, ``w = round(sqrt(s / r))`` (strictly smaller than the grid) at a uniform
  position, and accepts it if it adds between 1 and ``remaining`` new patches — the rule of
  ``data.masking.blockwise_mask``. The host version stops after 10 failures in a row; here the
  number of tries is fixed (static shapes), so a mask never exceeds ``num_masking_patches`` and
  almost always reaches it.
  """
  max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
  max_aspect = max_aspect or 1.0 / min_aspect
  lo, hi = math.log(min_aspect), math.log(max_aspect)
  rows = jnp.arange(grid_h)[:, None]
  cols = jnp.arange(grid_w)[None, :]

  def one(key):
    def body(i, carry):
      mask, count = carry
      ka, kr, kt, kl = jax.random.split(jax.random.fold_in(key, i), 4)
      remaining = num_masking_patches - count
      max_mask = jnp.minimum(remaining, max_num_patches)
      area = min_num_patches + (max_mask - min_num_patches) * jax.random.uniform(ka)
      aspect = jnp.exp(jax.random.uniform(kr, minval=lo, maxval=hi))
      h = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
      w = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
      fits = (h < grid_h) & (w < grid_w)
      top = jax.random.randint(kt, (), 0, jnp.maximum(grid_h - h + 1, 1))
      left = jax.random.randint(kl, (), 0, jnp.maximum(grid_w - w + 1, 1))
      block = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
      new = jnp.sum(block & ~mask)
      accept = fits & (new > 0) & (new <= max_mask) & (remaining > 0)
      return jnp.where(accept, mask | block, mask), count + jnp.where(accept, new, 0)

    mask, _ = jax.lax.fori_loop(0, attempts, body,
                                (jnp.zeros((grid_h, grid_w), bool), jnp.zeros((), jnp.int32)))
    return mask.reshape(-1).astype(jnp.float32)

  return jax.vmap(one)(jax.random.split(rng, batch))


class BEiT(MaskedImageMethod):
  """Mask-token ViT predicting the VQ tokenizer's code of each block-wise masked patch."""

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(MaskedImageMethod.Hparams):
    mask_ratio: float
    min_mask_patches: int
    mask_attempts: int = 50
    tokenizer: vq_tokenizer.TokenizerHparams
    tokenizer_workdir: str = ''
    tokenizer_random_init: bool = False   # tests only

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.tokenizer = vq_tokenizer.build_vqvae(m.tokenizer)
    if m.tokenizer.downsample != self.patch_size:
      raise ValueError(f'config.method.tokenizer.downsample={m.tokenizer.downsample} must equal '
                       f'model.patch_size={self.patch_size} (one visual token per patch)')
    self.num_mask = int(round(m.mask_ratio * self.num_patches))
    self.min_mask_patches = m.min_mask_patches
    self.mask_attempts = m.mask_attempts
    self.lm_head = Dense(self.tokenizer.num_codes, kernel_init=nn.initializers.truncated_normal(
        0.02), name='lm_head')
    # Loaded here, eagerly: init() runs under jax.eval_shape / jit, where Orbax cannot restore.
    self._tokenizer_params = self._load_tokenizer() if (
        m.tokenizer_workdir or m.tokenizer_random_init) else None

  def _load_tokenizer(self):
    """The frozen tokenizer params from ``tokenizer_workdir`` (or random, tests only), numpy."""
    m, size = self.hp, self.config.data.image_size
    if m.tokenizer_random_init:
      x = jnp.zeros((1, size, size, 3))
      key = jax.random.PRNGKey(self.config.seed + 7)
      return jax.device_get(self.tokenizer.init(key, x)['params'])
    params = vq_tokenizer.load_tokenizer_params(m.tokenizer_workdir)
    vq_tokenizer.check_tokenizer_params(params, self.tokenizer, size, 'config.method.tokenizer')
    return params

  def init(self, rng, batch):
    k1, k2, k3 = jax.random.split(rng, 3)
    x = jnp.zeros((2,) + batch['view0'].shape[1:3] + (3,), jnp.float32)
    bb = self.backbone.init({'params': k1}, x)['params']
    d = self.backbone.embed_dim
    head = self.lm_head.init(k2, jnp.zeros((2, d)))['params']
    mask_token = 0.02 * jax.random.truncated_normal(k3, -2.0, 2.0, (d,), jnp.float32)
    if self._tokenizer_params is None:   # raises the error that names the command to run
      vq_tokenizer.load_tokenizer_params(self.hp.tokenizer_workdir)
    tok = jax.tree_util.tree_map(jnp.asarray, self._tokenizer_params)
    return {'backbone': bb, 'lm_head': head, 'mask_token': mask_token}, {'tokenizer': tok}

  def views(self, batch, rng):
    k_aug, k_mask = jax.random.split(rng)
    x = self.image(batch, k_aug)
    mask = blockwise_masks_device(k_mask, x.shape[0], *self.grid, self.num_mask,
                                  min_num_patches=self.min_mask_patches,
                                  attempts=self.mask_attempts)
    return {'image': x, 'mask': mask}

  def targets(self, buffers, x):
    """(B, N) code indices of the un-masked image under the frozen tokenizer."""
    tok = jax.lax.stop_gradient(buffers['tokenizer'])
    idx = self.tokenizer.apply({'params': tok}, x, method=self.tokenizer.encode_indices)
    return idx.reshape(x.shape[0], -1)

  def loss(self, params, state, views, rng):
    labels = self.targets(state.buffers, views['image'])
    out = self.encode(params, views['image'], train=True, rng=rng, mask=views['mask'],
                      mask_token=params['mask_token'])
    logits = self.lm_head.apply({'params': params['lm_head']}, out['patches'])
    loss, acc = losses.masked_cross_entropy(logits, labels, views['mask'])
    return loss, ({'mim_acc': acc, 'mask_frac': views['mask'].mean()}, state.buffers)
