"""Decoders and tokenizers of the masked-image-modelling methods (flax.linen modules only).

* :class:`MAEDecoder` — MAE's light transformer decoder: the encoded visible tokens plus shared
  mask tokens, unshuffled back to image order, with its own fixed 2-D sin-cos position embedding
  (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, Sec. 3).
* :class:`SimMIMHead` — SimMIM's one-layer linear prediction head (Xie et al., "SimMIM", CVPR 2022,
  Sec. 3.3: a 1x1 conv + pixel shuffle, i.e. one linear map per token to its p x p x C pixels).
* :class:`VQVAE` — a convolutional VQ-VAE (van den Oord et al., "Neural Discrete Representation
  Learning", NeurIPS 2017): encoder, codebook with nearest-neighbour quantisation and
  straight-through gradient, decoder. It is BEiT's visual tokenizer here (BEiT used DALL-E's dVAE).
* :class:`Data2VecConvDecoder` — data2vec 2.0's convolutional decoder (Baevski et al., "Efficient
  Self-supervised Learning with Contextualized Target Representations for Vision, Speech and
  Language", ICML 2023, Sec. 3): grouped 3x3 convolutions over the patch grid, each followed by a
  parameter-free layer norm and GELU, with residual connections, then a linear projection.
* :class:`MultiMAEOutputAdapter` — MultiMAE's per-modality decoder: a cross-attention layer from
  the modality's (visible + mask) tokens to every encoded token, then a few transformer blocks and a
  linear head (Bachmann et al., "MultiMAE", ECCV 2022, Sec. 3.3).

Initialisation follows MAE's code: xavier-uniform Dense kernels, zero biases, N(0, 0.02) mask
tokens, LayerNorm eps 1e-6.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.data.masking import unshuffle
from ssl_jax.models.cpu.conv import conv_general_dilated
from ssl_jax.models.cpu.dense import Dense
from ssl_jax.models.cpu.gelu import gelu
from ssl_jax.models.vit import Block, sincos_2d_pos_embed

Array = jax.Array

_dense_init = nn.initializers.xavier_uniform()
_token_init = nn.initializers.normal(stddev=0.02)


def _dense(features: int, name: str, dtype=jnp.float32):
  return Dense(features, kernel_init=_dense_init, bias_init=nn.initializers.zeros, dtype=dtype,
               name=name)


# ----------------------------------------------------------------------------- MAE / SimMIM

class MAEDecoder(nn.Module):
  """MAE decoder (He et al. 2022): ``decoder_embed`` -> [visible tokens, mask tokens] unshuffled
  -> + sin-cos position embedding -> ``depth`` pre-norm blocks -> ``decoder_norm`` ->
  ``decoder_pred`` (pixels of every patch). Names follow MAE's ``models_mae.py``.

  Attributes:
    grid: (gh, gw) patch grid of the image.
    patch_dim: p * p * C, the pixels predicted per patch.
    embed_dim, depth, num_heads, mlp_ratio: decoder width (512), depth (8), heads (16) in MAE.
    num_prefix_tokens: prefix ([CLS]) tokens the encoder output starts with; they pass through
      the decoder (with a zero position embedding, as MAE) and are dropped from the prediction.
  """
  grid: Sequence[int]
  patch_dim: int
  embed_dim: int = 512
  depth: int = 8
  num_heads: int = 16
  mlp_ratio: float = 4.0
  num_prefix_tokens: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, ids_restore: Array) -> Array:
    """tokens (B, P + K, D_enc) encoded visible tokens (shuffled order, as MAE); ids_restore (B, N)
    from :func:`ssl_jax.data.masking.random_masking`. Returns (B, N, patch_dim) in image order."""
    p, d = self.num_prefix_tokens, self.embed_dim
    x = _dense(d, 'decoder_embed', self.dtype)(tokens)
    b, n = ids_restore.shape
    k = x.shape[1] - p
    mask_token = self.param('mask_token', _token_init, (1, 1, d))
    patches = jnp.concatenate(
        [x[:, p:], jnp.broadcast_to(mask_token.astype(x.dtype), (b, n - k, d))], axis=1)
    x = jnp.concatenate([x[:, :p], unshuffle(patches, ids_restore)], axis=1)
    pos = sincos_2d_pos_embed(d, tuple(self.grid), p)
    x = x + jnp.asarray(pos, x.dtype)[None]
    for i in range(self.depth):
      x = Block(d, self.num_heads, self.mlp_ratio, True, 0.0, 1e-6, self.dtype,
                name=f'decoder_blocks_{i}')(x)
    x = nn.LayerNorm(1e-6, dtype=jnp.float32, name='decoder_norm')(x)
    x = _dense(self.patch_dim, 'decoder_pred', jnp.float32)(x)
    return x[:, p:]


class SimMIMHead(nn.Module):
  """SimMIM's prediction head (Xie et al. 2022): one linear layer from each patch token to the
  ``patch_dim = p * p * C`` raw pixels of its patch (their 1x1 conv + PixelShuffle, in
  :func:`ssl_jax.models.vit.patchify` order).

  ``depth > 0`` puts that many pre-norm transformer blocks (width of the tokens, ``num_heads``)
  and a LayerNorm before the linear layer: the heavier heads of the paper's Table 3 ablation
  (2-layer MLP, inverse Swin), here as ViT blocks over the patch tokens, so that the encoder's
  last block must carry context for the head instead of being the pixel predictor itself.
  """
  patch_dim: int
  depth: int = 0
  num_heads: int = 4
  mlp_ratio: float = 4.0

  @nn.compact
  def __call__(self, patch_tokens: Array) -> Array:
    x = patch_tokens.astype(jnp.float32)
    for i in range(self.depth):
      x = Block(x.shape[-1], self.num_heads, self.mlp_ratio, True, 0.0, 1e-6,
                name=f'blocks_{i}')(x)
    if self.depth:
      x = nn.LayerNorm(1e-6, dtype=jnp.float32, name='norm')(x)
    return _dense(self.patch_dim, 'pred')(x)


class Data2VecConvDecoder(nn.Module):
  """data2vec 2.0's image decoder (Baevski et al. 2023, Sec. 3; fairseq ``Decoder2d``).

  The input is the full (B, N, D) token grid in image order — the student's encoded visible
  tokens with the masked positions already filled by the caller (data2vec 2.0 fills them with
  N(0, 0.01^2) noise). ``layers`` blocks of ``conv k x k (groups) -> LayerNorm (no affine) ->
  GELU`` run on the (gh, gw) grid, each added to its input when the widths match (the paper's
  residual decoder), then a linear map to ``out_dim`` (the target width). The grouped
  convolutions go through :func:`ssl_jax.models.cpu.conv.conv_general_dilated` (im2col: XLA:CPU's
  grouped convolutions are ~16-25x slower).
  """
  grid: Sequence[int]
  out_dim: int
  dim: int = 768
  layers: int = 6
  kernel: int = 3
  groups: int = 16

  @nn.compact
  def __call__(self, tokens: Array) -> Array:
    b, n, d = tokens.shape
    gh, gw = self.grid
    if n != gh * gw:
      raise ValueError(f'Data2VecConvDecoder: {n} tokens do not fill the {gh}x{gw} grid')
    x = tokens.astype(jnp.float32).reshape(b, gh, gw, d)
    for i in range(self.layers):
      y = nn.Conv(self.dim, (self.kernel, self.kernel), padding=[(self.kernel // 2,) * 2] * 2,
                  feature_group_count=self.groups, conv_general_dilated=conv_general_dilated,
                  name=f'conv_{i}')(x)
      y = nn.LayerNorm(1e-5, use_bias=False, use_scale=False, name=f'norm_{i}')(y)
      y = gelu(y)
      x = y + x if x.shape[-1] == self.dim else y
    return _dense(self.out_dim, 'proj')(x).reshape(b, n, self.out_dim)


# ----------------------------------------------------------------------------- VQ-VAE

class ResBlock(nn.Module):
  """VQ-VAE residual block ``x + conv1x1(relu(conv3x3(relu(x))))`` (van den Oord et al. 2017)."""
  hidden: int

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(self.hidden, (3, 3), padding='SAME', name='conv1')(nn.relu(x))
    return x + nn.Conv(x.shape[-1], (1, 1), name='conv2')(nn.relu(h))


class VQEncoder(nn.Module):
  """Images (B, H, W, C) -> (B, H/2^k, W/2^k, code_dim) with ``k = num_down`` stride-2 4x4 convs."""
  hidden: int
  num_down: int
  code_dim: int
  num_res: int = 2

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.hidden, (3, 3), padding='SAME', name='conv_in')(x)
    for i in range(self.num_down):
      x = nn.Conv(self.hidden, (4, 4), strides=(2, 2), padding='SAME', name=f'down_{i}')(
          nn.relu(x))
    for i in range(self.num_res):
      x = ResBlock(self.hidden, name=f'res_{i}')(x)
    return nn.Conv(self.code_dim, (1, 1), name='conv_out')(nn.relu(x))


class VQDecoder(nn.Module):
  """Codes (B, h, w, code_dim) -> images (B, h*2^k, w*2^k, out_channels), mirror of VQEncoder."""
  hidden: int
  num_up: int
  out_channels: int = 3
  num_res: int = 2

  @nn.compact
  def __call__(self, z):
    x = nn.Conv(self.hidden, (3, 3), padding='SAME', name='conv_in')(z)
    for i in range(self.num_res):
      x = ResBlock(self.hidden, name=f'res_{i}')(x)
    for i in range(self.num_up):
      x = nn.ConvTranspose(self.hidden, (4, 4), strides=(2, 2), padding='SAME', name=f'up_{i}')(
          nn.relu(x))
    return nn.Conv(self.out_channels, (3, 3), padding='SAME', name='conv_out')(nn.relu(x))


def nearest_code(z: Array, codebook: Array) -> Array:
  """Index of the nearest codebook row (L2) for every vector of z (..., D); codebook (K, D)."""
  z = z.astype(jnp.float32)
  d2 = (jnp.sum(z ** 2, -1, keepdims=True) - 2.0 * z @ codebook.T
        + jnp.sum(codebook ** 2, -1))
  return jnp.argmin(d2, axis=-1).astype(jnp.int32)


class VQVAE(nn.Module):
  """VQ-VAE (van den Oord et al. 2017) used as BEiT's visual tokenizer.

  ``__call__`` returns a dict: ``z_e`` encoder output, ``z_q`` its nearest codebook vectors (with
  gradient to the codebook, for the codebook loss), ``indices`` (B, h, w) code indices, ``x_rec``
  the decoding of ``straight_through(z_e, z_q)`` (so reconstruction gradients reach the encoder).
  The grid (h, w) = (H, W) / 2^num_down equals the ViT patch grid when 2^num_down = patch size.

  ``l2_codes=True`` l2-normalises encoder outputs and codes before the lookup (Yu et al. 2022,
  ViT-VQGAN), which keeps far more codes alive on small data; False is the paper's VQ-VAE.
  """
  num_codes: int = 512
  code_dim: int = 64
  hidden: int = 128
  num_down: int = 2
  num_res: int = 2
  out_channels: int = 3
  l2_codes: bool = False

  def setup(self):
    self.encoder = VQEncoder(self.hidden, self.num_down, self.code_dim, self.num_res)
    self.decoder = VQDecoder(self.hidden, self.num_down, self.out_channels, self.num_res)
    k = self.num_codes
    # uniform(-1/K, 1/K), as the reference implementation's nn.Embedding init.
    init = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -1.0 / k, 1.0 / k)
    self.codebook = self.param('codebook', init, (k, self.code_dim))

  def _codes(self):
    return _l2n(self.codebook) if self.l2_codes else self.codebook

  def quantize(self, z_e):
    """(z_e, z_q, indices) for encoder output z_e (normalised first when ``l2_codes``)."""
    z_e = _l2n(z_e) if self.l2_codes else z_e.astype(jnp.float32)
    codes = self._codes()
    idx = nearest_code(z_e, codes)
    return z_e, codes[idx], idx

  def encode_indices(self, x):
    """Images -> (B, h, w) int32 code indices (the BEiT targets)."""
    return self.quantize(self.encoder(x))[2]

  def decode_indices(self, idx):
    return self.decoder(self._codes()[idx])

  def __call__(self, x):
    z_e, z_q, idx = self.quantize(self.encoder(x))
    z_st = z_e + jax.lax.stop_gradient(z_q - z_e)  # losses.straight_through
    return {'z_e': z_e, 'z_q': z_q, 'indices': idx, 'x_rec': self.decoder(z_st)}


def _l2n(x, eps=1e-6):
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


# ----------------------------------------------------------------------------- MultiMAE

class CrossAttentionBlock(nn.Module):
  """``q + attn(norm_q(q), norm_c(context)); q + mlp(norm(q))`` (MultiMAE's output adapter)."""
  dim: int
  num_heads: int
  mlp_ratio: float = 4.0

  @nn.compact
  def __call__(self, q, context):
    qn = nn.LayerNorm(1e-6, name='query_norm')(q)
    cn = nn.LayerNorm(1e-6, name='context_norm')(context)
    q = q + nn.MultiHeadDotProductAttention(
        self.num_heads, kernel_init=_dense_init, name='cross_attn')(qn, cn)
    h = nn.LayerNorm(1e-6, name='mlp_norm')(q)
    h = _dense(int(self.dim * self.mlp_ratio), 'fc1')(h)
    return q + _dense(self.dim, 'fc2')(gelu(h))


class MultiMAEOutputAdapter(nn.Module):
  """One modality's decoder in MultiMAE (Bachmann et al. 2022, Sec. 3.3).

  Queries are this modality's N tokens in image order — its visible encoded tokens and a mask
  token elsewhere — plus a sin-cos position embedding; they cross-attend to *all* encoded tokens
  (every modality, plus position and a learned modality embedding each), then go through
  ``depth`` self-attention blocks and a linear head to ``patch_dim`` pixels per patch.
  """
  grid: Sequence[int]
  patch_dim: int
  embed_dim: int = 256
  depth: int = 2
  num_heads: int = 8

  @nn.compact
  def __call__(self, context, queries):
    """context (B, T, D_dec) projected encoder tokens with their embeddings; queries (B, N, D_dec)
    this modality's tokens in image order. Returns (B, N, patch_dim)."""
    d = self.embed_dim
    pos = jnp.asarray(sincos_2d_pos_embed(d, tuple(self.grid)))[None]
    x = CrossAttentionBlock(d, self.num_heads, name='cross')(queries + pos, context)
    for i in range(self.depth):
      x = Block(d, self.num_heads, 4.0, True, 0.0, 1e-6, name=f'blocks_{i}')(x)
    x = nn.LayerNorm(1e-6, name='norm')(x)
    return _dense(self.patch_dim, 'pred')(x)


class MultiMAEDecoder(nn.Module):
  """All of MultiMAE's decoders (Bachmann et al. 2022, Sec. 3.3) over one shared context.

  The encoded tokens (prefix + K visible tokens drawn from M modalities of N patches each, in the
  shuffled order of the masking) are projected to ``embed_dim`` (``decoder_embed``); each visible
  token gets the sin-cos position embedding of its patch plus a learned embedding of its modality;
  every modality then gets an :class:`MultiMAEOutputAdapter` whose queries are its N tokens in image
  order (visible ones from the encoder, a shared mask token elsewhere).

  Returns {modality name: (B, N, patch_dim of that modality)}.
  """
  grid: Sequence[int]
  names: Sequence[str]
  patch_dims: Sequence[int]
  embed_dim: int = 256
  depth: int = 2
  num_heads: int = 8
  num_prefix_tokens: int = 1

  @nn.compact
  def __call__(self, tokens, ids_keep, ids_restore):
    p, d, nmod = self.num_prefix_tokens, self.embed_dim, len(self.names)
    n = self.grid[0] * self.grid[1]
    x = _dense(d, 'decoder_embed')(tokens)
    b, k = x.shape[0], x.shape[1] - p
    mod_emb = self.param('modality_embed', _token_init, (nmod, d))
    pos = jnp.asarray(sincos_2d_pos_embed(d, tuple(self.grid)))
    table = jnp.concatenate([pos + mod_emb[i] for i in range(nmod)], axis=0)  # (M * N, d)
    vis = x[:, p:]
    context = jnp.concatenate([x[:, :p], vis + table[ids_keep]], axis=1)
    mask_token = self.param('mask_token', _token_init, (1, 1, d))
    full = unshuffle(jnp.concatenate([vis, jnp.broadcast_to(mask_token, (b, nmod * n - k, d))],
                                     axis=1), ids_restore)
    out = {}
    for i, (name, dim) in enumerate(zip(self.names, self.patch_dims)):
      queries = full[:, i * n:(i + 1) * n] + mod_emb[i]
      out[name] = MultiMAEOutputAdapter(self.grid, dim, d, self.depth, self.num_heads,
                                        name=f'output_adapter_{i}')(context, queries)
    return out
