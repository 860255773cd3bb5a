"""Swin Transformer backbone with SimMIM-style mask tokens.

Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows", ICCV 2021.
Self-attention inside non-overlapping ``window x window`` windows, every second block on windows
shifted by ``window // 2`` (a cyclic roll plus an attention mask keeps the window count fixed),
a learned relative position bias per head, and 2x2 patch merging between stages, so stage ``i``
has stride ``patch_size * 2^i`` and width ``embed_dim * 2^i``. Windows and shifts are fixed at
construction from ``img_size`` (a stage whose map is no larger than the window is one unshifted
window, as in timm); a map that does not divide into windows is zero-padded at the bottom / right
for the attention (as timm; e.g. DINO's 96 px local crops with window 7), so any image size that
is a multiple of the output stride runs with the same parameters.

Layout follows the original Swin / SimMIM code (``microsoft/Swin-Transformer``), with its dots
written as underscores between modules: patch embedding ``patch_embed/{proj, norm}``; stage ``i``
has blocks ``layers_{i}_blocks_{j}/{norm1, attn/{qkv, proj, relative_position_bias_table}, norm2,
mlp/{fc1, fc2}}`` and, for every stage but the last, ``layers_{i}_downsample/{norm, reduction}``
at its *end* (Swin v1; timm >= 0.9 moved it to the start of the next stage); final ``norm``.
No absolute position embedding (the paper's default).

SimMIM (Xie et al. 2022) masks Swin at the patch-embedding level: masked tokens of the
``(H/p, W/p)`` grid are replaced by a learned mask token (owned by the method and passed to
:meth:`Swin.encode`) after the patch norm; the prediction head reads the last stage, whose stride
is :attr:`Swin.out_stride`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models.cpu.dense import Dense
from ssl_jax.models.vit import Mlp, PatchEmbed, drop_path

Array = jax.Array

_init = nn.initializers.truncated_normal(stddev=0.02)   # Swin's trunc_normal_(std=.02)


# ----------------------------------------------------------------------------- pure helpers

def window_partition(x: Array, window: int) -> Array:
  """(B, H, W, C) -> (B, nW, window*window, C), windows in row-major order, tokens row-major
  inside each window (Swin's ``window_partition`` with the batch axis kept apart)."""
  b, h, w, c = x.shape
  if h % window or w % window:
    raise ValueError(f'feature map {(h, w)} is not divisible into {window}x{window} windows')
  x = x.reshape(b, h // window, window, w // window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // window) * (w // window), window * window, c)


def window_reverse(windows: Array, window: int, h: int, w: int) -> Array:
  """Inverse of :func:`window_partition`: (B, nW, window*window, C) -> (B, H, W, C)."""
  b, _, _, c = windows.shape
  x = windows.reshape(b, h // window, w // window, window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def relative_position_index(window: int) -> np.ndarray:
  """(N, N) index into the ((2W-1)^2, heads) bias table for N = W*W tokens of a window:
  ``(dy + W - 1) * (2W - 1) + (dx + W - 1)`` with ``(dy, dx)`` = query minus key position."""
  ys, xs = np.meshgrid(np.arange(window), np.arange(window), indexing='ij')
  coords = np.stack([ys.reshape(-1), xs.reshape(-1)])            # (2, N)
  rel = coords[:, :, None] - coords[:, None, :] + (window - 1)    # (2, N, N)
  return (rel[0] * (2 * window - 1) + rel[1]).astype(np.int32)


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> np.ndarray:
  """(nW, N, N) additive attention mask for the cyclically shifted windows (0 within a region,
  -100 across regions, Swin's value): after rolling by ``-shift`` a window at the bottom / right
  border holds tokens from up to four image regions that were not adjacent, and they must not
  attend to each other."""
  regions = np.zeros((1, h, w, 1), np.float32)
  bands = lambda n: (slice(0, n - window), slice(n - window, n - shift), slice(n - shift, n))
  label = 0
  for ys in bands(h):
    for xs in bands(w):
      regions[:, ys, xs, :] = label
      label += 1
  win = window_partition(regions, window)[0, :, :, 0]   # (nW, N); numpy in, numpy out
  return np.where(win[:, :, None] != win[:, None, :], -100.0, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- modules

class WindowAttention(nn.Module):
  """Multi-head self-attention within windows with a learned relative position bias (Swin,
  Liu et al. 2021, Eq. 4): ``softmax(Q K^T / sqrt(d) + B + mask) V``."""
  dim: int
  num_heads: int
  window: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: np.ndarray | None = None) -> Array:
    b, nw, n, d = x.shape
    heads = self.num_heads
    if d % heads:
      raise ValueError(f'Swin stage width {d} is not divisible by num_heads {heads}')
    hd = d // heads
    table = self.param('relative_position_bias_table', _init, ((2 * self.window - 1) ** 2, heads))
    qkv = Dense(3 * d, kernel_init=_init, dtype=self.dtype, name='qkv')(x)
    q, k, v = jnp.moveaxis(qkv.reshape(b, nw, n, 3, heads, hd), 3, 0)
    logits = jnp.einsum('bwqhd,bwkhd->bwhqk', q * hd ** -0.5, k).astype(jnp.float32)
    bias = table[relative_position_index(self.window).reshape(-1)].reshape(n, n, heads)
    logits = logits + bias.transpose(2, 0, 1)
    if mask is not None:
      logits = logits + jnp.asarray(mask)[None, :, None]
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum('bwhqk,bwkhd->bwqhd', probs, v).reshape(b, nw, n, d)
    return Dense(d, kernel_init=_init, dtype=self.dtype, name='proj')(out)


class SwinBlock(nn.Module):
  """``x + attn(norm1(x))`` over (shifted) windows, then ``x + mlp(norm2(x))`` (Swin, Fig. 3b)."""
  dim: int
  num_heads: int
  window: int
  shift: int
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    b, h, w, d = x.shape
    ws, s = self.window, self.shift
    use_dp = train and self.drop_path_rate > 0.0

    def residual(y):
      return drop_path(y, self.drop_path_rate, self.make_rng('dropout')) if use_dp else y

    y = nn.LayerNorm(1e-5, dtype=self.dtype, name='norm1')(x)
    if s:
      y = jnp.roll(y, (-s, -s), axis=(1, 2))
    # A map that does not divide into windows is zero-padded at the bottom / right after the
    # roll, and the region mask is laid over the padded map (timm's order, so exports match).
    ph, pw = -h % ws, -w % ws
    if ph or pw:
      y = jnp.pad(y, ((0, 0), (0, ph), (0, pw), (0, 0)))
    mask = shifted_window_mask(h + ph, w + pw, ws, s) if s else None
    y = WindowAttention(d, self.num_heads, ws, self.dtype, name='attn')(window_partition(y, ws),
                                                                        mask)
    y = window_reverse(y, ws, h + ph, w + pw)[:, :h, :w]
    if s:
      y = jnp.roll(y, (s, s), axis=(1, 2))
    x = x + residual(y)
    y = nn.LayerNorm(1e-5, dtype=self.dtype, name='norm2')(x)
    return x + residual(Mlp(int(d * self.mlp_ratio), self.dtype, kernel_init=_init,
                            name='mlp')(y))


class PatchMerging(nn.Module):
  """2x2 neighbour concatenation ``[x(0,0), x(1,0), x(0,1), x(1,1)]`` -> LayerNorm(4C) ->
  Linear(4C -> 2C, no bias): halves the resolution, doubles the width (Swin, Sec. 3.1)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, h, w, c = x.shape
    if h % 2 or w % 2:
      raise ValueError(f'Swin patch merging needs an even feature map, got {(h, w)}')
    x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                        axis=-1)
    x = nn.LayerNorm(1e-5, dtype=self.dtype, name='norm')(x)
    return Dense(2 * c, use_bias=False, kernel_init=_init, dtype=self.dtype, name='reduction')(x)


class Swin(nn.Module):
  """Swin Transformer encoder (Liu et al. 2021). NHWC float input; ``__call__`` gives the pooled
  (B, feature_dim) feature (mean of the final-normed last-stage tokens), :meth:`encode` the
  tokens, with optional SimMIM mask-token replacement."""
  # img_size: the resolution the stages' windows are sized for (stage_window) and an exported timm
  # twin is built for; the module runs on any multiple of out_stride (check_image_size), padding
  # maps that do not divide into windows.
  img_size: int = 224
  patch_size: int = 4
  embed_dim: int = 96
  depths: Sequence[int] = (2, 2, 6, 2)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  window_size: int = 7
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32

  num_prefix_tokens = 0   # no [CLS]: features are mean-pooled, as in the paper

  @property
  def num_stages(self) -> int:
    return len(self.depths)

  @property
  def out_stride(self) -> int:
    """Pixels per last-stage token side: ``patch_size * 2^(stages - 1)``."""
    return self.patch_size * 2 ** (self.num_stages - 1)

  @property
  def feature_dim(self) -> int:
    return self.embed_dim * 2 ** (self.num_stages - 1)

  def stage_window(self, i: int) -> tuple[int, bool]:
    """(window, shifted blocks?) of stage ``i``, fixed by ``img_size`` as timm's: a stage whose
    map at ``img_size`` is no larger than ``window_size`` is one window of that map, unshifted.
    Inputs of other sizes keep these windows (padded), so the parameters (the relative position
    tables) do not depend on the input size (DINO's local crops share the globals' weights)."""
    res = max(self.img_size // (self.patch_size * 2 ** i), 1)
    return min(self.window_size, res), res > self.window_size

  def check_image_size(self, size: int) -> None:
    """Raises ValueError unless every patch merging gets an even map (``size`` a multiple of
    :attr:`out_stride`); maps that do not divide into windows are padded (:class:`SwinBlock`)."""
    if size % self.out_stride:
      raise ValueError(f'image size {size} is not a multiple of the Swin output stride '
                       f'{self.out_stride} (patch_size {self.patch_size} x 2^{self.num_stages - 1}); set '
                       f'data.image_size to a multiple of {self.out_stride}, or fewer stages '
                       '(model.swin_depths / model.swin_heads)')

  @nn.compact
  def encode(self, x: Array, *, train: bool = False, mask: Array | None = None,
             mask_token: Array | None = None) -> dict[str, Any]:
    """All last-stage tokens.

    Args:
      x: (B, H, W, C) float images.
      train: enables stochastic depth (uses the 'dropout' rng).
      mask: optional (B, (H/p) * (W/p)) float/bool, 1 = masked patch-embedding token, replaced by
        ``mask_token`` after the patch norm (SimMIM's ``SwinTransformerForSimMIM``).
      mask_token: (embed_dim,) array owned by the calling method; required with ``mask``.
    Returns:
      dict with ``patches`` = ``tokens`` (B, N_out, feature_dim), final-normed, row-major over the
      (H / out_stride, W / out_stride) grid, ``prefix`` (B, 0, feature_dim) and ``grid``.
    """
    if len(self.num_heads) != self.num_stages:
      raise ValueError(f'Swin depths {tuple(self.depths)} and num_heads {tuple(self.num_heads)} '
                       'must have the same length (one entry per stage)')
    h = PatchEmbed(self.patch_size, self.embed_dim, self.dtype, kernel_init=_init, norm_eps=1e-5,
                   name='patch_embed')(x.astype(self.dtype))
    b, gh, gw, d = h.shape
    if mask is not None:
      if mask_token is None:
        raise ValueError('encode(mask=...) needs mask_token, a (embed_dim,) array')
      if mask.shape != (b, gh * gw):
        raise ValueError(f'mask must be (B, N) = {(b, gh * gw)}, got {mask.shape}')
      w = mask.reshape(b, gh, gw, 1).astype(h.dtype)
      h = h * (1 - w) + mask_token.astype(h.dtype) * w
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
    k = 0
    for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      window, shifted = self.stage_window(i)
      for j in range(depth):
        shift = window // 2 if (j % 2 and shifted) else 0
        h = SwinBlock(h.shape[-1], heads, window, shift, self.mlp_ratio, float(rates[k]),
                      self.dtype, name=f'layers_{i}_blocks_{j}')(h, train)
        k += 1
      if i < self.num_stages - 1:
        h = PatchMerging(self.dtype, name=f'layers_{i}_downsample')(h)
    h = nn.LayerNorm(1e-5, dtype=jnp.float32, name='norm')(h)
    b, oh, ow, c = h.shape
    tokens = h.reshape(b, oh * ow, c)
    return {'tokens': tokens, 'patches': tokens, 'prefix': tokens[:, :0], 'grid': (oh, ow)}

  def __call__(self, x: Array, train: bool = False) -> Array:
    """Pooled (B, feature_dim) feature: mean of the final-normed last-stage tokens."""
    return self.encode(x, train=train)['patches'].mean(axis=1)


# ----------------------------------------------------------------------------- presets

SWIN_PRESETS: dict[str, dict[str, Any]] = {
    'swin_tiny': dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'swin_small': dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'swin_base': dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}
