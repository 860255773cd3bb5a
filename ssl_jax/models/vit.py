"""Vision Transformer backbone with patch masking and multi-resolution position embeddings.

ViT: Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition
at Scale", ICLR 2021. Fixed 2-D sin-cos position embeddings and the MAE-style visible-token
encoder: He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.

Parameter names follow timm's ``VisionTransformer`` so an exporter maps them 1:1:

    patch_embed/proj/{kernel,bias}       timm patch_embed.proj.{weight,bias}  (HWIO -> OIHW)
    cls_token       (1, 1, D)            timm cls_token
    reg_token       (1, P - 1, D)        timm reg_token   (only when num_prefix_tokens > 1)
    register_tokens (1, R, D)            DINOv2 register_tokens (num_registers = R > 0);
                                         timm appends them to reg_token, pos_embed rows 0
    pos_embed       (1, P + N, D)        timm pos_embed   (only for pos_embed='learned')
    blocks_{i}/norm1, attn/qkv, attn/proj, norm2, mlp/fc1, mlp/fc2
                                         timm blocks.{i}.*  (Dense kernels transposed)
    blocks_{i}/ls1/gamma, ls2/gamma      LayerScale (layerscale_init > 0), timm / DINOv2 names
    blocks_{i}/attn/q_norm, k_norm       QK-norm (qk_norm=True), timm names
    blocks_{i}/mlp/fc1 (D, 2H), fc2      SwiGLU (mlp='swiglu'): timm SwiGLUPacked, DINOv2 w12/w3
    norm                                 timm norm

Prefix tokens: token 0 is [CLS]; any further prefix tokens (e.g. SiT's extra contrastive
token) live in ``reg_token`` because that is exactly how timm's ``reg_tokens=P-1`` lays them
out: sequence = [cls, reg..., patches], and pos_embed covers all prefix positions.
With ``num_prefix_tokens == 0`` there is no class token and the pooled feature is the mean of
the final-normed patch tokens (timm: ``class_token=False, global_pool='avg', fc_norm=False``).

The sin-cos embedding (``pos_embed='sincos'``) is a constant, not a parameter, so no
optimizer (or weight decay) can touch it; an exporter regenerates timm's ``pos_embed`` with
:func:`sincos_2d_pos_embed`.

The mask token of SimMIM/BEiT/iBOT is owned by the method, not by this module, and is passed
to :meth:`ViT.encode`; this keeps the ViT parameter tree identical to timm's encoder.
"""

from __future__ import annotations

from typing import Any, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# nn.Dense and the exact GELU in the forms XLA:CPU runs fast (same parameters, same results on
# every backend): models/cpu/.
from ssl_jax.models.cpu import bf16_dot
from ssl_jax.models.cpu.dense import Dense
from ssl_jax.models.cpu.gelu import gelu

Array = jax.Array

_dense_init = nn.initializers.xavier_uniform()
# MAE initialises the patch projection as xavier_uniform on the (D, C*p*p) flattened kernel.
_patch_init = nn.initializers.variance_scaling(
    1.0, 'fan_avg', 'uniform', in_axis=(0, 1, 2), out_axis=-1)
_token_init = nn.initializers.normal(stddev=0.02)
_pos_init = nn.initializers.truncated_normal(stddev=0.02)


def _dots(bf16: bool):
    """A Dense layer's ``dot_general``: bf16 operands, float32 accumulation (models/cpu/bf16_dot.py)
    when ``bf16``, else XLA's own (None)."""
    return bf16_dot.dot_general if bf16 else None


# ----------------------------------------------------------------------------- pure helpers

def _sincos_1d(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """1-D sin-cos embedding of positions ``pos`` (M,) -> (M, embed_dim) (MAE, He et al. 2022)."""
    if embed_dim % 2:
        raise ValueError(f'embed_dim must be even for a 1-D sin-cos embedding, got {embed_dim}')
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000.0 ** omega
    out = np.einsum('m,d->md', pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d_pos_embed(embed_dim: int, grid_size: int | Sequence[int],
                        num_prefix_tokens: int = 0) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding as in MAE (He et al. 2022), float32 numpy.

    Half the channels encode one grid axis and half the other; each half is
    ``[sin(pos * omega), cos(pos * omega)]`` with ``omega_i = 1 / 10000^(2i / (D/2))``.
    Matches MAE's ``get_2d_sincos_pos_embed`` exactly, including its ordering: the first D/2
    channels encode the column (w) index and the last D/2 the row (h) index; tokens are in
    row-major (h, w) order. ``num_prefix_tokens`` zero rows are prepended (MAE's cls row).

    Args:
      embed_dim: D, divisible by 4.
      grid_size: int for a square grid or (grid_h, grid_w).
      num_prefix_tokens: zero rows to prepend.
    Returns:
      (num_prefix_tokens + grid_h * grid_w, D) float32.
    """
    if embed_dim % 4:
        raise ValueError(f'embed_dim must be divisible by 4 for 2-D sin-cos, got {embed_dim}')
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
    cols, rows = np.meshgrid(np.arange(gw, dtype=np.float64), np.arange(gh, dtype=np.float64))
    emb = np.concatenate([_sincos_1d(embed_dim // 2, cols), _sincos_1d(embed_dim // 2, rows)],
                         axis=1)
    if num_prefix_tokens:
        emb = np.concatenate([np.zeros((num_prefix_tokens, embed_dim)), emb], axis=0)
    return emb.astype(np.float32)


def resample_pos_embed(pos_embed: Array, new_grid: Sequence[int], old_grid: Sequence[int],
                       num_prefix_tokens: int, antialias: bool = False) -> Array:
    """Bicubically resample the patch part of a (1, P + N, D) position embedding to a new grid.

    Prefix rows are kept as they are; the (old_h, old_w) patch grid is resized to (new_h,
    new_w) with ``jax.image.resize`` (no anti-aliasing, as PyTorch's ``F.interpolate`` used by
    DINO / timm). Note jax's cubic kernel is Keys a=-0.5, PyTorch's a=-0.75, so results are
    close to, not bit-equal with, PyTorch. ``antialias=True`` is timm's
    ``resample_abs_pos_embed`` (``F.interpolate(..., antialias=True)``, a=-0.5 with the kernel
    widened when shrinking) to float32 rounding, e.g. DINOv2's 37x37 table at 224 px. Shapes are static, so this is jittable. Returns the
    input unchanged when the grids agree. Used for ViT (Dosovitskiy et al. 2021) at resolutions
    other than the one it was built for (e.g. DINO's 96 px local crops).
    """
    new_grid, old_grid = tuple(new_grid), tuple(old_grid)
    if new_grid == old_grid:
        return pos_embed
    prefix, patch = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = pos_embed.shape[-1]
    patch = patch.reshape(1, *old_grid, dim)
    patch = jax.image.resize(patch, (1, *new_grid, dim), method='bicubic', antialias=antialias)
    return jnp.concatenate([prefix, patch.reshape(1, -1, dim).astype(pos_embed.dtype)], axis=1)


def patchify(imgs: Array, p: int) -> Array:
    """(B, H, W, C) images -> (B, N, p*p*C) patches, MAE ordering (He et al. 2022).

    Patches are row-major over the (H/p, W/p) grid; within a patch pixels are (p, q, c)
    ordered, i.e. MAE's 'nhwpqc'.
    """
    b, hh, ww, c = imgs.shape
    if hh % p or ww % p:
        raise ValueError(f'image size {(hh, ww)} not divisible by patch size {p}')
    return einops.rearrange(imgs, 'b (h p) (w q) c -> b (h w) (p q c)', p=p, q=p)


def unpatchify(x: Array, p: int, h: int, w: int, c: int) -> Array:
    """(B, h*w, p*p*c) patches -> (B, h*p, w*p, c) images; inverse of :func:`patchify` (MAE)."""
    return einops.rearrange(x, 'b (h w) (p q c) -> b (h p) (w q) c', h=h, w=w, p=p, q=p, c=c)


# ----------------------------------------------------------------------------- modules

class PatchEmbed(nn.Module):
    """Non-overlapping patch projection, a Conv with kernel = stride = patch (ViT, Dosovitskiy
    et al. 2021). Named ``patch_embed/proj`` as timm. Returns (B, gh, gw, D). ``norm_eps > 0``
    adds a LayerNorm ``patch_embed/norm`` after it (Swin's ``patch_norm``)."""
    patch_size: int
    embed_dim: int
    dtype: Any = jnp.float32
    kernel_init: Any = _patch_init
    norm_eps: float = 0.0

    @nn.compact
    def __call__(self, x: Array) -> Array:
        p = self.patch_size
        x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding='VALID',
                    kernel_init=self.kernel_init, bias_init=nn.initializers.zeros,
                    dtype=self.dtype, name='proj')(x)
        if self.norm_eps:
            x = nn.LayerNorm(self.norm_eps, dtype=self.dtype, name='norm')(x)
        return x


def rope_2d_angles(positions: Array, head_dim: int, base: float = 100.0) -> Array:
    """Rotation angles of 2-D axial RoPE (Su et al. 2021; axial 2-D form of Heo et al. 2024,
    "Rotary Position Embedding for Vision Transformer"), float32 (..., head_dim / 2).

    ``positions`` (..., 2) holds (row, col) patch coordinates. The first half of the angles
    rotates by the row, the second by the column, each with frequencies
    ``base^(-i / (head_dim / 4))``, i < head_dim / 4. A token with angle 0 is not rotated
    (prefix and register tokens). Because a rotation R(a) satisfies R(a)^T R(b) = R(b - a),
    q.k depends only on the positions' difference: attention sees relative positions only.
    """
    if head_dim % 4:
        raise ValueError(f'2-D RoPE needs head_dim divisible by 4, got {head_dim}; '
                         'change embed_dim / num_heads')
    n = head_dim // 4
    freqs = base ** (-jnp.arange(n, dtype=jnp.float32) / n)
    pos = positions.astype(jnp.float32)
    return jnp.concatenate([pos[..., :1] * freqs, pos[..., 1:2] * freqs], axis=-1)


def apply_rope(x: Array, angles: Array) -> Array:
    """Rotates (B, T, heads, head_dim) queries or keys by (B | 1, T, head_dim / 2) angles
    (rotate-half pairing: channel i pairs with i + head_dim / 2; RoFormer, Su et al. 2021)."""
    half = x.shape[-1] // 2
    cos = jnp.cos(angles)[:, :, None, :].astype(x.dtype)
    sin = jnp.sin(angles)[:, :, None, :].astype(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and ``proj`` output (ViT,
    Dosovitskiy et al. 2021; timm layout). ``return_attention=True`` returns the softmax
    probabilities (B, heads, T, T) instead of the output (explicit path); otherwise the fused
    ``jax.nn.dot_product_attention`` kernel is used. ``qk_norm`` LayerNorms each head's queries
    and keys (``q_norm``/``k_norm`` as timm; Dehghani et al. 2023, ViT-22B) to keep attention
    logits bounded; ``rope`` angles (B | 1, T, head_dim / 2) rotate queries and keys after it
    (2-D RoPE, see :func:`rope_2d_angles`)."""
    dim: int
    num_heads: int
    qkv_bias: bool = True
    dtype: Any = jnp.float32
    qk_norm: bool = False
    layer_norm_eps: float = 1e-6
    bf16_dots: bool = False

    @nn.compact
    def __call__(self, x: Array, return_attention: bool = False,
                 rope: Array | None = None) -> Array:
        b, t, d = x.shape
        if d % self.num_heads:
            raise ValueError(f'embed_dim {d} not divisible by num_heads {self.num_heads}')
        head_dim = d // self.num_heads
        qkv = Dense(3 * d, use_bias=self.qkv_bias, kernel_init=_dense_init,
                    bias_init=nn.initializers.zeros, dtype=self.dtype,
                    dot_general=_dots(self.bf16_dots), name='qkv')(x)
        # timm splits qkv as (3, heads, head_dim) along the feature axis.
        q, k, v = jnp.moveaxis(qkv.reshape(b, t, 3, self.num_heads, head_dim), 2, 0)
        if self.qk_norm:
            q = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name='q_norm')(q)
            k = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name='k_norm')(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        if return_attention:
            logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32)
            return jax.nn.softmax(logits * head_dim ** -0.5, axis=-1)
        out = jax.nn.dot_product_attention(q, k, v)
        return Dense(d, kernel_init=_dense_init, bias_init=nn.initializers.zeros,
                     dtype=self.dtype, dot_general=_dots(self.bf16_dots),
                     name='proj')(out.reshape(b, t, d))


class Mlp(nn.Module):
    """Transformer MLP ``fc1 -> GELU (exact) -> fc2`` (ViT, Dosovitskiy et al. 2021; timm)."""
    hidden_dim: int
    dtype: Any = jnp.float32
    kernel_init: Any = _dense_init
    bf16_dots: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = x.shape[-1]
        x = Dense(self.hidden_dim, kernel_init=self.kernel_init, bias_init=nn.initializers.zeros,
                  dtype=self.dtype, dot_general=_dots(self.bf16_dots), name='fc1')(x)
        x = gelu(x)
        return Dense(d, kernel_init=self.kernel_init, bias_init=nn.initializers.zeros,
                     dtype=self.dtype, dot_general=_dots(self.bf16_dots), name='fc2')(x)


def swiglu_hidden_dim(dim: int, mlp_ratio: float) -> int:
    """SwiGLU hidden width H as DINOv2 (Oquab et al. 2024) sizes it: 2/3 of ``dim * mlp_ratio``
    (so the three matrices cost what GELU's two do, Shazeer 2020), rounded up to a multiple of
    8. ViT-g/14: 1536 * 4 -> 4096. timm's ``SwiGLUPacked`` twin takes ``mlp_ratio = 2H / dim``."""
    return (int(int(dim * mlp_ratio) * 2 / 3) + 7) // 8 * 8


class SwiGLU(nn.Module):
    """SwiGLU FFN ``fc2(silu(x W_gate) * (x W_value))`` (Shazeer 2020; DINOv2's ViT-g). One
    packed ``fc1`` (D, 2H) holds [gate | value], as timm's ``SwiGLUPacked`` and DINOv2's
    ``w12`` (``fc2`` = DINOv2's ``w3``)."""
    hidden_dim: int
    dtype: Any = jnp.float32
    kernel_init: Any = _dense_init
    bf16_dots: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = x.shape[-1]
        h = Dense(2 * self.hidden_dim, kernel_init=self.kernel_init,
                  bias_init=nn.initializers.zeros, dtype=self.dtype,
                  dot_general=_dots(self.bf16_dots), name='fc1')(x)
        gate, value = h[..., :self.hidden_dim], h[..., self.hidden_dim:]
        return Dense(d, kernel_init=self.kernel_init, bias_init=nn.initializers.zeros,
                     dtype=self.dtype, dot_general=_dots(self.bf16_dots),
                     name='fc2')(jax.nn.silu(gate) * value)


class LayerScale(nn.Module):
    """Per-channel residual-branch scale ``gamma * x``, gamma initialised to ``init_value``
    (CaiT, Touvron et al. 2021; DINOv2 uses 1e-5) so deep ViTs start close to the identity.
    Param ``gamma`` as timm's and DINOv2's ``ls1.gamma``/``ls2.gamma``."""
    init_value: float

    @nn.compact
    def __call__(self, x: Array) -> Array:
        gamma = self.param('gamma', nn.initializers.constant(self.init_value), (x.shape[-1],))
        return x * gamma.astype(x.dtype)


def drop_path(x: Array, rate: float, rng: Array) -> Array:
    """Stochastic depth (Huang et al. 2016): drop the whole residual branch per sample with
    probability ``rate`` and rescale survivors by 1 / (1 - rate)."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Block(nn.Module):
    """Pre-norm transformer block ``x + ls1(attn(norm1(x))); x + ls2(mlp(norm2(x)))`` with
    stochastic depth (ViT, Dosovitskiy et al. 2021; timm names norm1/attn/ls1/norm2/mlp/ls2).
    ``layerscale_init > 0`` adds LayerScale (CaiT / DINOv2), ``mlp='swiglu'`` the SwiGLU FFN,
    ``qk_norm`` per-head query/key LayerNorm; ``rope`` angles go to the attention."""
    dim: int
    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-6
    dtype: Any = jnp.float32
    layerscale_init: float = 0.0
    mlp: str = 'gelu'
    qk_norm: bool = False
    bf16_dots: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool = False, return_attention: bool = False,
                 rope: Array | None = None) -> Array:
        norm1 = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name='norm1')
        attn = Attention(self.dim, self.num_heads, self.qkv_bias, self.dtype, self.qk_norm,
                         self.layer_norm_eps, self.bf16_dots, name='attn')
        if return_attention:
            return attn(norm1(x), True, rope)
        norm2 = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name='norm2')
        if self.mlp == 'swiglu':
            mlp = SwiGLU(swiglu_hidden_dim(self.dim, self.mlp_ratio), self.dtype,
                         bf16_dots=self.bf16_dots, name='mlp')
        else:
            mlp = Mlp(int(self.dim * self.mlp_ratio), self.dtype, bf16_dots=self.bf16_dots,
                      name='mlp')
        if self.layerscale_init:
            ls1 = LayerScale(self.layerscale_init, name='ls1')
            ls2 = LayerScale(self.layerscale_init, name='ls2')
        else:
            ls1 = ls2 = lambda y: y
        use_dp = train and self.drop_path_rate > 0.0

        def residual(y):
            return drop_path(y, self.drop_path_rate, self.make_rng('dropout')) if use_dp else y

        x = x + residual(ls1(attn(norm1(x), False, rope)))
        return x + residual(ls2(mlp(norm2(x))))


class ViT(nn.Module):
    """Vision Transformer encoder (Dosovitskiy et al. 2021) for self-supervised learning.

    Input is NHWC float. ``__call__`` gives the pooled (B, D) feature; :meth:`encode` gives
    all tokens and supports MAE-style visible-token encoding (``ids_keep``, He et al. 2022)
    and SimMIM/BEiT/iBOT-style mask-token replacement (``mask`` + ``mask_token``);
    :meth:`last_selfattention` gives DINO's attention maps. Inputs whose patch grid differs
    from ``img_size // patch_size`` get a bicubically resampled position embedding.
    See the module docstring for parameter naming (timm layout).
    """
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3  # documents the expected input; flax infers it from x at init
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.0
    num_prefix_tokens: int = 1
    pos_embed: str = 'learned'
    frozen_patch_embed: bool = False
    # Pooled feature of ``__call__``: 'token' = the final-normed prefix token ``pool_token``
    # (0 = [CLS]; SiT's contrastive token is 1), 'mean' = the mean of the final-normed patch
    # tokens (MAE / data2vec eval). Without prefix tokens the pool is always the mean.
    pool: str = 'token'
    pool_token: int = 0
    dtype: Any = jnp.float32
    remat: bool = False
    # Dense matmuls with bf16 operands, float32 accumulation (models/cpu/bf16_dot.py; the
    # AMX / AVX512-BF16 fast path of XLA:CPU): config.model.cpu_dots='bf16'.
    bf16_dots: bool = False
    layer_norm_eps: float = 1e-6
    # Modern-ViT parts (DINOv2 / I-JEPA era); the defaults leave the model unchanged.
    # Register tokens (Darcet et al. 2024): learned tokens after the prefix tokens, without a
    # position embedding, that every block sees but no output returns except ``registers``.
    num_registers: int = 0
    layerscale_init: float = 0.0   # LayerScale's initial gamma (CaiT; DINOv2: 1e-5); 0 = off
    mlp: str = 'gelu'              # 'gelu' | 'swiglu' (DINOv2 ViT-g; hidden per swiglu_hidden_dim)
    qk_norm: bool = False          # per-head LayerNorm of queries and keys (ViT-22B)
    rope: bool = False             # 2-D axial RoPE on patch tokens (prefix/registers unrotated)
    rope_base: float = 100.0
    # Position-embedding resampling at another resolution: False = bicubic without
    # anti-aliasing (as before); True = timm's (anti-aliased when shrinking), e.g. DINOv2's
    # 518 px table at 224 px. Identity at img_size either way.
    pos_embed_antialias: bool = False

    @property
    def grid_size(self) -> tuple[int, int]:
        """The patch grid the position embedding is built for."""
        g = self.img_size // self.patch_size
        return g, g

    def setup(self):
        if self.pos_embed not in ('learned', 'sincos', 'none'):
            raise ValueError(f"pos_embed must be 'learned', 'sincos' or 'none', got "
                             f'{self.pos_embed!r}')
        if self.num_registers < 0:
            raise ValueError(f'num_registers must be >= 0, got {self.num_registers}')
        if self.mlp not in ('gelu', 'swiglu'):
            raise ValueError(f"mlp must be 'gelu' or 'swiglu', got {self.mlp!r}")
        if self.rope and (self.embed_dim // self.num_heads) % 4:
            raise ValueError(f'rope needs head_dim = embed_dim / num_heads divisible by 4, got '
                             f'{self.embed_dim}/{self.num_heads}; change embed_dim or num_heads')
        if self.num_prefix_tokens < 0:
            raise ValueError(f'num_prefix_tokens must be >= 0, got {self.num_prefix_tokens}')
        if self.pool not in ('token', 'mean'):
            raise ValueError(f"pool must be 'token' or 'mean', got {self.pool!r}")
        if self.num_prefix_tokens and not 0 <= self.pool_token < self.num_prefix_tokens:
            raise ValueError(f'pool_token={self.pool_token} is not one of the '
                             f'{self.num_prefix_tokens} prefix tokens')
        d, n = self.embed_dim, self.grid_size[0] * self.grid_size[1]
        self.patch_embed = PatchEmbed(self.patch_size, d, self.dtype)
        if self.num_prefix_tokens >= 1:
            self.cls_token = self.param('cls_token', _token_init, (1, 1, d))
        if self.num_prefix_tokens >= 2:
            self.reg_token = self.param('reg_token', _token_init,
                                        (1, self.num_prefix_tokens - 1, d))
        if self.num_registers:
            self.register_tokens = self.param('register_tokens', _token_init,
                                              (1, self.num_registers, d))
        if self.pos_embed == 'learned':
            self.pos_embed_param = self.param('pos_embed', _pos_init,
                                              (1, self.num_prefix_tokens + n, d))
        block_cls = nn.remat(Block, static_argnums=(2, 3)) if self.remat else Block
        rates = np.linspace(0.0, self.drop_path_rate, self.depth)
        self.blocks = [
            block_cls(d, self.num_heads, self.mlp_ratio, self.qkv_bias, float(rates[i]),
                      self.layer_norm_eps, self.dtype, self.layerscale_init, self.mlp,
                      self.qk_norm, self.bf16_dots, name=f'blocks_{i}')
            for i in range(self.depth)]
        # Final norm in float32: its outputs feed losses and heads.
        self.norm = nn.LayerNorm(self.layer_norm_eps, dtype=jnp.float32)

    # ------------------------------------------------------------------ pieces

    def _pos_embed_for(self, grid: tuple[int, int]) -> Array | None:
        """(1, P + gh*gw, D) position embedding for a (gh, gw) patch grid (None: 'none')."""
        if self.pos_embed == 'none':
            return None
        if self.pos_embed == 'sincos':
            pe = jnp.asarray(sincos_2d_pos_embed(self.embed_dim, self.grid_size,
                                                 self.num_prefix_tokens))[None]
        else:
            pe = self.pos_embed_param
        return resample_pos_embed(pe, grid, self.grid_size, self.num_prefix_tokens,
                                  self.pos_embed_antialias)

    def _prefix_tokens(self, batch: int) -> Array:
        """(B, P, D) [CLS] followed by the extra prefix tokens."""
        toks = []
        if self.num_prefix_tokens >= 1:
            toks.append(self.cls_token)
        if self.num_prefix_tokens >= 2:
            toks.append(self.reg_token)
        pre = jnp.concatenate(toks, axis=1)
        return jnp.broadcast_to(pre, (batch,) + pre.shape[1:])

    def _embed(self, x: Array, mask: Array | None = None, ids_keep: Array | None = None,
               mask_token: Array | None = None) -> Array:
        """Images -> (B, P + N', D) token sequence with position embeddings."""
        x = self.patch_embed(x.astype(self.dtype))
        if self.frozen_patch_embed:  # MoCo v3 (Chen et al. 2021): fixed random patch projection
            x = jax.lax.stop_gradient(x)
        b, gh, gw, d = x.shape
        x = x.reshape(b, gh * gw, d)
        if mask is not None:
            if mask_token is None:
                raise ValueError('encode(mask=...) needs mask_token, a (D,) array')
            if mask.shape != (b, gh * gw):
                raise ValueError(f'mask must be (B, N) = {(b, gh * gw)}, got {mask.shape}')
            x = jnp.where(mask[..., None].astype(bool), mask_token.astype(x.dtype), x)
        pe = self._pos_embed_for((gh, gw))
        pe = None if pe is None else pe.astype(x.dtype)
        p = self.num_prefix_tokens
        if pe is not None:
            x = x + pe[:, p:]
        if ids_keep is not None:
            x = jnp.take_along_axis(x, ids_keep[..., None].astype(jnp.int32), axis=1)
        if self.num_registers:  # DINOv2-reg layout: [prefix, registers, patches], no pos embed
            regs = jnp.broadcast_to(self.register_tokens, (b,) + self.register_tokens.shape[1:])
            x = jnp.concatenate([regs.astype(x.dtype), x], axis=1)
        if p:
            pre = self._prefix_tokens(b).astype(x.dtype)
            x = jnp.concatenate([pre if pe is None else pre + pe[:, :p], x], axis=1)
        return x

    def _rope_for(self, x: Array, ids_keep: Array | None) -> Array | None:
        """(B | 1, P + R + N', head_dim / 2) RoPE angles for images ``x``: patch tokens rotate
        by their (row, col) grid position (kept ones only under ``ids_keep``), prefix and
        register tokens by 0. None when ``rope`` is off."""
        if not self.rope:
            return None
        gh, gw = x.shape[1] // self.patch_size, x.shape[2] // self.patch_size
        rows, cols = jnp.meshgrid(jnp.arange(gh), jnp.arange(gw), indexing='ij')
        pos = jnp.stack([rows.reshape(-1), cols.reshape(-1)], axis=-1)[None]  # (1, N, 2)
        if ids_keep is not None:
            pos = jnp.take(pos[0], ids_keep.astype(jnp.int32), axis=0)        # (B, K, 2)
        angles = rope_2d_angles(pos, self.embed_dim // self.num_heads, self.rope_base)
        extra = self.num_prefix_tokens + self.num_registers
        return jnp.pad(angles, ((0, 0), (extra, 0), (0, 0)))

    def _drop_registers(self, h: Array) -> Array:
        """(B, P + R + N', D) -> (B, P + N', D): the sequence every output shows."""
        if not self.num_registers:
            return h
        p = self.num_prefix_tokens
        return jnp.concatenate([h[:, :p], h[:, p + self.num_registers:]], axis=1)

    # ------------------------------------------------------------------ entry points

    def encode(self, x: Array, *, train: bool = False, mask: Array | None = None,
               ids_keep: Array | None = None, mask_token: Array | None = None,
               return_layers: bool = False) -> dict[str, Any]:
        """Run the encoder and return all tokens (ViT, Dosovitskiy et al. 2021).

        Args:
          x: (B, H, W, C) float images.
          train: enables stochastic depth (uses the 'dropout' rng).
          mask: optional (B, N) bool; True patches are replaced by ``mask_token`` before the
            position embedding is added (SimMIM / BEiT / iBOT).
          ids_keep: optional (B, K) int; keep only these patch tokens, gathered after adding
            the position embedding and before the blocks (MAE, He et al. 2022). Prefix
            tokens are always kept.
          mask_token: (D,) array owned by the calling method; required with ``mask``.
          return_layers: also return every block's output (before the final norm), for
            data2vec.
        Returns:
          dict with ``tokens`` (B, P + N', D) after the final norm, ``prefix`` (B, P, D),
          ``patches`` (B, N', D), ``registers`` (B, R, D) and, if requested, ``layers`` (list
          of depth arrays). Register tokens appear only under ``registers`` (``tokens`` and
          ``layers`` leave them out), so slicing by ``num_prefix_tokens`` stays right.
        """
        rope = self._rope_for(x, ids_keep)
        h = self._embed(x, mask, ids_keep, mask_token)
        layers = []
        for blk in self.blocks:
            h = blk(h, train, False, rope)
            if return_layers:
                layers.append(self._drop_registers(h))
        full = self.norm(h)
        p, r = self.num_prefix_tokens, self.num_registers
        tokens = self._drop_registers(full)
        out = {'tokens': tokens, 'prefix': tokens[:, :p], 'patches': tokens[:, p:],
               'registers': full[:, p:p + r]}
        if return_layers:
            out['layers'] = layers
        return out

    def __call__(self, x: Array, train: bool = False) -> Array:
        """Pooled (B, D) feature per ``pool``: the final-normed prefix token ``pool_token`` ([CLS]
        by default), or the mean of the final-normed patch tokens (``pool='mean'``, and always
        when ``num_prefix_tokens == 0``) (ViT, Dosovitskiy et al. 2021). Registers are never
        pooled (Darcet et al. 2024)."""
        out = self.encode(x, train=train)
        if self.pool == 'mean' or self.num_prefix_tokens == 0:
            return out['patches'].mean(axis=1)
        return out['tokens'][:, self.pool_token]

    def last_selfattention(self, x: Array) -> Array:
        """(B, heads, T, T) softmax attention of the last block, eval mode (DINO attention maps,
        Caron et al. 2021). Call with ``model.apply(vars, x, method=ViT.last_selfattention)``.
        With registers, their rows and columns are left out (T = P + N), so each row sums to
        1 minus the attention paid to registers."""
        rope = self._rope_for(x, None)
        h = self._embed(x)
        for blk in self.blocks[:-1]:
            h = blk(h, False, False, rope)
        att = self.blocks[-1](h, False, True, rope)
        if not self.num_registers:
            return att
        keep = np.r_[0:self.num_prefix_tokens, self.num_prefix_tokens + self.num_registers:
                     att.shape[-1]]
        return att[:, :, keep][:, :, :, keep]


# ----------------------------------------------------------------------------- presets

VIT_PRESETS: dict[str, dict[str, Any]] = {
    'vit_tiny': dict(embed_dim=192, depth=12, num_heads=3),
    'vit_small': dict(embed_dim=384, depth=12, num_heads=6),
    'vit_base': dict(embed_dim=768, depth=12, num_heads=12),
    'vit_large': dict(embed_dim=1024, depth=24, num_heads=16),
    # DINOv2's ViT-g/14 (Oquab et al. 2024); DINOv2 trains it with mlp='swiglu'.
    'vit_giant': dict(embed_dim=1536, depth=40, num_heads=24),
}


def vit_tiny(**kw) -> ViT:
    """ViT-Ti (Touvron et al. 2021 DeiT sizes): D=192, depth 12, 3 heads; kw override."""
    return ViT(**{**VIT_PRESETS['vit_tiny'], **kw})


def vit_small(**kw) -> ViT:
    """ViT-S (DeiT sizes, as DINO / MoCo v3): D=384, depth 12, 6 heads; kw override."""
    return ViT(**{**VIT_PRESETS['vit_small'], **kw})


def vit_base(**kw) -> ViT:
    """ViT-B (Dosovitskiy et al. 2021): D=768, depth 12, 12 heads; kw override."""
    return ViT(**{**VIT_PRESETS['vit_base'], **kw})


def vit_large(**kw) -> ViT:
    """ViT-L (Dosovitskiy et al. 2021): D=1024, depth 24, 16 heads; kw override."""
    return ViT(**{**VIT_PRESETS['vit_large'], **kw})


def vit_giant(**kw) -> ViT:
    """ViT-g as DINOv2 (Oquab et al. 2024): D=1536, depth 40, 24 heads; DINOv2 pairs it with
    ``mlp='swiglu'`` (hidden 4096) and ``layerscale_init=1e-5``; kw override."""
    return ViT(**{**VIT_PRESETS['vit_giant'], **kw})
