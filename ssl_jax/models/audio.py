"""The speech backbone of wav2vec 2.0, HuBERT and data2vec-audio: a waveform conv encoder, a
convolutional position embedding and a transformer.

wav2vec 2.0: Baevski et al., "wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
Representations", NeurIPS 2020. HuBERT: Hsu et al., "HuBERT: Self-Supervised Speech
Representation Learning by Masked Prediction of Hidden Units", TASLP 2021 (the same encoder).
data2vec: Baevski et al., "data2vec: A General Framework for Self-supervised Learning in Speech,
Vision and Language", ICML 2022 (the same encoder; its targets are the blocks' FFN outputs,
``encode()['ffn']``).

Architecture and parameter names follow fairseq's ``Wav2Vec2Model`` (the reference code of all
three papers), so an exporter maps them 1:1 (flax Dense kernels are torch weights transposed;
conv kernels are (k, C_in, C_out), torch's (C_out, C_in, k) reversed):

    feature_extractor/conv_layers_{i}/conv/kernel       fairseq feature_extractor.conv_layers.{i}.0
    feature_extractor/conv_layers_{i}/conv/bias         (conv_bias=True only: wav2vec2_large)
    feature_extractor/conv_layers_{i}/layer_norm        .{i}.2 (GroupNorm, layer 0, 'group_norm')
                                                        or .{i}.2.1 (LayerNorm, 'layer_norm')
    layer_norm                                          layer_norm (over conv channels)
    post_extract_proj                                   post_extract_proj (only when C != D)
    pos_conv/{weight_v, weight_g, bias}                 encoder.pos_conv.0.{weight_v,weight_g,bias}
    encoder_layer_norm                                  encoder.layer_norm
    layers_{i}/self_attn/qkv                            encoder.layers.{i}.self_attn.{q,k,v}_proj
                                                        (concatenated in that order, out axis)
    layers_{i}/self_attn/out_proj, self_attn_layer_norm, fc1, fc2, final_layer_norm
                                                        encoder.layers.{i}.* (same names)

The mask embedding (fairseq ``mask_emb``, HF ``masked_spec_embed``) is owned by the method and
passed to :meth:`AudioEncoder.encode`, as the ViT's mask token; so are the quantizer, the
final projections and the per-clip waveform normalisation (``data/audio.py``).

Choices stated:

* Convolutions, ``conv_impl``: 'xla' is ``lax.conv_general_dilated``; 'im2col' writes the
  feature encoder's strided convolutions as one matmul over frames (the (B, T_out, k * C_in)
  windows of the input, a pure reshape for kernel == stride, times the kernel as a
  (k * C_in, C_out) matrix, :func:`conv1d_matmul`) and the grouped position convolution as the
  library's im2col einsum over groups (``models/cpu/im2col.py``). 'auto' (the default) is XLA's
  on every backend: on the 2-core Xeon (jax 0.10.2, shared machine; ms forward / forward +
  backward, best of 5-15 alternated runs) XLA:CPU's 1-D convolutions were as fast or faster.
  The 64-channel encoder of ``audio_tiny`` at batch 32 x 16000 samples: XLA 35 / 149,
  matmul 53 / 141 (the k 3 / stride 2 windows cost XLA:CPU ~40 ms to concatenate, more than
  XLA's whole convolution; the first layer alone, C_in = 1, k 10 / stride 5, was faster as a
  matmul, 5.7 / 33 vs 9.9 / 48, which did not show in the whole encoder); the 512-channel one at
  batch 8: 315 / 1191 vs 400 / 1230. ``audio_tiny``'s position convolution (k 32, 8 groups,
  batch 32 x 49 x 128) 7.7 / 43 XLA vs 77 / 113 im2col; ``wav2vec2_base``'s (k 128, 16 groups,
  batch 8 x 49 x 768) 35 / 356 vs 350 / 566: XLA:CPU's grouped convolution is fast on this
  shape (docs/performance.md's slow grouped ones are 3 x 3 2-D).
* fairseq's ``SamePad`` (drop the last frame of an even kernel's 'same' output) is computed as
  padding (k // 2, k // 2 - 1): the same frames, without computing the dropped one.
* Layer norms use fairseq's epsilon, 1e-5. The feature encoder's norms and ``layer_norm``
  run in float32 (fairseq's ``Fp32GroupNorm`` / ``Fp32LayerNorm``), so do the final norm and the
  returned ``frames`` (they feed losses and heads).
* Initialisation as fairseq: conv kernels He-normal (``kaiming_normal_``), no conv bias by default;
  ``post_extract_proj`` torch's default Linear init; every transformer Linear N(0, 0.02) with zero
  bias (``init_bert_params``); pos_conv ``weight_v`` N(0, sqrt(4 / (k * D))) and ``weight_g`` its
  norm, so the initial weight is ``weight_v``.
* Dropouts (``dropout``, ``attention_dropout``, ``activation_dropout``, ``dropout_input``;
  fairseq's base values 0.1, 0.1, 0.0, 0.1) default to 0 and act only with ``train=True`` and a
  'dropout' rng. No layer drop, no padding mask (fixed-length clips).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ssl_jax.models.cpu import conv as cpu_conv
from ssl_jax.models.cpu.dense import Dense
from ssl_jax.models.cpu.gelu import gelu

Array = jax.Array

# (dim, kernel, stride) per layer: fairseq's default, 20 ms frames (320-sample hop) at 16 kHz with
# a 400-sample receptive field.
CONV_LAYERS: tuple[tuple[int, int, int], ...] = (
    ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2)
CONV_MODES = ('group_norm', 'layer_norm')
CONV_IMPLS = ('auto', 'im2col', 'xla')

_EPS = 1e-5
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')    # kaiming_normal_
_torch_linear_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')
_bert_init = nn.initializers.normal(stddev=0.02)                          # init_bert_params


# ----------------------------------------------------------------------------- pure helpers

def conv_output_length(length: int, conv_layers: Sequence[Sequence[int]] = CONV_LAYERS) -> int:
  """Frames the feature encoder makes of ``length`` samples: ``floor((L - k) / s) + 1`` layer
  by layer (no padding), e.g. 16000 -> 49 with the default layers. 0 when too short."""
  for _, k, s in conv_layers:
    if length < k:
      return 0
    length = (length - k) // s + 1
  return length


def conv1d_windows(x: Array, kernel_size: int, stride: int) -> Array:
  """(B, L, C) -> (B, T, k * C) windows of a VALID stride-s convolution (im2col in 1-D), window
  t = samples t*s .. t*s + k - 1, (k, C) ordered. The input is reshaped into (B, blocks, s * C)
  blocks of s samples, and a window is q = k // s whole consecutive blocks plus the first k - q*s
  samples of the next: contiguous slices of the blocks, fewer than k strided ones. For
  kernel == stride the windows are the blocks (a reshape, no copy)."""
  b, length, c = x.shape
  k, s = kernel_size, stride
  t = (length - k) // s + 1
  if t <= 0:
    raise ValueError(f'{length} samples are too few for a kernel of {k}')
  if k == s:
    return x[:, :t * s].reshape(b, t, k * c)
  q, r = divmod(k, s)
  nb = t + q if r else t + q - 1           # blocks the last window reaches into
  n = nb * s
  x = x[:, :n] if length >= n else jnp.pad(x, ((0, 0), (0, n - length), (0, 0)))
  blocks = x.reshape(b, nb, s * c)
  parts = [blocks[:, j:j + t] for j in range(q)]
  if r:
    parts.append(blocks[:, q:q + t, :r * c])
  return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]


def conv1d_matmul(x: Array, kernel: Array, stride: int) -> Array:
  """VALID stride-s 1-D convolution (B, L, C_in) * (k, C_in, C_out) -> (B, T, C_out) as one
  2-D matmul of the :func:`conv1d_windows` by the (k * C_in, C_out) kernel; same sums of products
  as ``lax.conv_general_dilated(..., ('NWC', 'WIO', 'NWC'))`` (float32 rounding)."""
  k, cin, cout = kernel.shape
  cols = conv1d_windows(x, k, stride)
  b, t, _ = cols.shape
  return jnp.dot(cols.reshape(b * t, k * cin), kernel.reshape(k * cin, cout)).reshape(b, t, cout)


def conv1d_xla(x: Array, kernel: Array, stride: int, padding=((0, 0),),
               feature_group_count: int = 1) -> Array:
  """``lax.conv_general_dilated`` on (B, L, C) with a (k, C_in / groups, C_out) kernel."""
  return lax.conv_general_dilated(x, kernel, (stride,), padding,
                                  dimension_numbers=('NWC', 'WIO', 'NWC'),
                                  feature_group_count=feature_group_count)


def grad_multiply(x: Array, scale: float) -> Array:
  """Identity forward, gradient times ``scale`` (fairseq ``GradMultiply``; wav2vec 2.0 base
  scales the feature encoder's gradient by 0.1). ``scale == 0`` stops the gradient."""
  if scale == 1.0:
    return x
  frozen = lax.stop_gradient(x)
  return frozen if scale == 0.0 else frozen + scale * (x - frozen)


# ----------------------------------------------------------------------------- modules

class StridedConv1d(nn.Module):
  """VALID strided 1-D convolution, kernel (k, C_in, C_out): XLA's convolution, or one matmul
  over frames for ``conv_impl='im2col'`` (module docstring); same parameters and results."""
  features: int
  kernel_size: int
  stride: int
  use_bias: bool = False
  conv_impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cin = x.shape[-1]
    kernel = self.param('kernel', _conv_init, (self.kernel_size, cin, self.features))
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.conv_impl == 'im2col':
      y = conv1d_matmul(x, kernel, self.stride)
    else:
      y = conv1d_xla(x, kernel, self.stride)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


class ConvFeatureEncoder(nn.Module):
  """The waveform encoder of wav2vec 2.0 (Baevski et al. 2020; fairseq
  ``ConvFeatureExtractionModel``): per layer conv -> norm -> GELU, no padding.

  ``mode='group_norm'`` (fairseq 'default', the base models): a GroupNorm with one group per
  channel (each channel normalised over time, per clip) after the first conv only;
  ``'layer_norm'`` (the large LV-60 models): a LayerNorm over channels after every conv.
  (B, L) float waveform -> (B, T, C) with T = :meth:`num_frames` (L).
  """
  conv_layers: tuple[tuple[int, int, int], ...] = CONV_LAYERS
  mode: str = 'group_norm'
  conv_bias: bool = False
  conv_impl: str = 'auto'
  dtype: Any = jnp.float32

  def num_frames(self, length: int) -> int:
    """Output frames for ``length`` samples (:func:`conv_output_length`)."""
    return conv_output_length(length, self.conv_layers)

  @nn.compact
  def __call__(self, audio: Array) -> Array:
    if self.mode not in CONV_MODES:
      raise ValueError(f'conv mode must be one of {CONV_MODES}, got {self.mode!r}')
    if self.conv_impl not in CONV_IMPLS:
      raise ValueError(f'conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}')
    if audio.ndim != 2:
      raise ValueError(f'audio must be a (B, L) waveform, got shape {audio.shape}')
    if self.num_frames(audio.shape[1]) <= 0:
      raise ValueError(f'{audio.shape[1]} samples make no frame; the feature encoder needs at '
                       f'least its receptive field')
    x = audio[..., None]
    for i, (dim, k, s) in enumerate(self.conv_layers):
      x = _ConvLayer(dim, k, s, self.mode == 'layer_norm',
                     self.mode == 'group_norm' and i == 0, self.conv_bias, self.conv_impl,
                     self.dtype, name=f'conv_layers_{i}')(x)
    return x


class _ConvLayer(nn.Module):
  """conv -> (LayerNorm | GroupNorm(groups = channels) | nothing) -> GELU (fairseq ``block``)."""
  features: int
  kernel_size: int
  stride: int
  layer_norm: bool
  group_norm: bool
  conv_bias: bool
  conv_impl: str
  dtype: Any

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = StridedConv1d(self.features, self.kernel_size, self.stride, self.conv_bias,
                      self.conv_impl, self.dtype, name='conv')(x)
    if self.layer_norm:
      x = nn.LayerNorm(_EPS, dtype=jnp.float32, name='layer_norm')(x)
    elif self.group_norm:
      x = nn.GroupNorm(self.features, epsilon=_EPS, dtype=jnp.float32, name='layer_norm')(x)
    return gelu(x).astype(self.dtype)


def weight_norm(v: Array, g: Array, axes: Sequence[int]) -> Array:
  """``g * v / ||v||``, the norm over ``axes`` (Salimans & Kingma 2016; torch ``weight_norm``)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(axes), keepdims=True))
  return v * (g / norm)


class ConvPositionalEmbedding(nn.Module):
  """wav2vec 2.0's relative position embedding (Baevski et al. 2020; fairseq ``pos_conv``):
  GELU(SamePad(grouped conv(x))), kernel ``kernel_size``, ``groups`` groups, bias, with weight
  normalisation ``w = g * v / ||v||`` as torch's ``weight_norm(dim=2)``: one gain per kernel
  position, the norm over the (out, in / groups) axes. Params ``weight_v`` (k, D / groups, D),
  ``weight_g`` (k, 1, 1) (torch's (D, D / groups, k) and (1, 1, k) transposed) and ``bias``.
  (B, T, D) -> (B, T, D)."""
  kernel_size: int = 128
  groups: int = 16
  conv_impl: str = 'auto'
  dtype: Any = jnp.float32

  def padding(self) -> tuple[int, int]:
    """(left, right) frames of zero padding: fairseq pads k // 2 each side and SamePad drops the
    last output frame of an even kernel, i.e. pads one frame less on the right."""
    k = self.kernel_size
    return k // 2, k // 2 - (1 - k % 2)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d, k, g = x.shape[-1], self.kernel_size, self.groups
    if d % g:
      raise ValueError(f'embed_dim {d} is not divisible by pos_conv_groups {g}')
    v = self.param('weight_v', nn.initializers.normal(stddev=(4.0 / (k * d)) ** 0.5),
                   (k, d // g, d))
    # torch's weight_norm starts g at ||v||, so the initial weight is v itself.
    gain = self.param('weight_g', lambda _, shape: jnp.sqrt(
        jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True)).reshape(shape), (k, 1, 1))
    bias = self.param('bias', nn.initializers.zeros, (d,))
    w = weight_norm(v, gain, (1, 2)).astype(self.dtype)
    x = x.astype(self.dtype)
    pad = self.padding()
    if self.conv_impl != 'im2col':
      y = conv1d_xla(x, w, 1, (pad,), feature_group_count=g)
    else:   # the im2col einsum over groups, as a (B, 1, T, D) image
      y = cpu_conv.conv_general_dilated(
          x[:, None], w[None], (1, 1), ((0, 0), pad), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
          feature_group_count=g, impl='im2col')[:, 0]
    return gelu(y + bias.astype(self.dtype))


class SelfAttention(nn.Module):
  """Multi-head self-attention (Vaswani et al. 2017; fairseq ``MultiheadAttention``): fused
  ``qkv`` projection (fairseq's q_proj, k_proj, v_proj side by side), ``out_proj``, dropout on the
  attention probabilities only when training with ``attention_dropout > 0`` (else XLA's fused
  ``dot_product_attention``)."""
  dim: int
  num_heads: int
  attention_dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    b, t, d = x.shape
    if d % self.num_heads:
      raise ValueError(f'embed_dim {d} not divisible by num_heads {self.num_heads}')
    hd = d // self.num_heads
    dense = functools.partial(Dense, kernel_init=_bert_init, bias_init=nn.initializers.zeros,
                              dtype=self.dtype)
    qkv = dense(3 * d, name='qkv')(x)
    q, k, v = jnp.moveaxis(qkv.reshape(b, t, 3, self.num_heads, hd), 2, 0)
    if deterministic or not self.attention_dropout:
      out = jax.nn.dot_product_attention(q, k, v)
    else:
      logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32) * hd ** -0.5
      probs = nn.Dropout(self.attention_dropout)(jax.nn.softmax(logits, axis=-1),
                                                 deterministic=False)
      out = jnp.einsum('bhqk,bkhd->bqhd', probs.astype(v.dtype), v)
    return dense(d, name='out_proj')(out.reshape(b, t, d))


class EncoderLayer(nn.Module):
  """fairseq's ``TransformerSentenceEncoderLayer`` (wav2vec 2.0, Baevski et al. 2020).

  Post-LN (``layer_norm_first=False``, base)::

      x = self_attn_layer_norm(x + drop(attn(x)))
      f = fc2(drop_act(GELU(fc1(x))))
      x = final_layer_norm(x + drop(f))

  Pre-LN (``layer_norm_first=True``, large)::

      x = x + drop(attn(self_attn_layer_norm(x)))
      f = fc2(drop_act(GELU(fc1(final_layer_norm(x)))))
      x = x + drop(f)

  Returns ``(x, f)``: ``f`` is fairseq's ``layer_result``, the FFN output before dropout, the
  residual add and (post-LN) the final norm, data2vec-audio's per-layer target.
  """
  dim: int
  num_heads: int
  mlp_ratio: float = 4.0
  layer_norm_first: bool = False
  dropout: float = 0.0
  attention_dropout: float = 0.0
  activation_dropout: float = 0.0
  layer_norm_eps: float = _EPS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> tuple[Array, Array]:
    attn = SelfAttention(self.dim, self.num_heads, self.attention_dropout, self.dtype,
                         name='self_attn')
    norm1 = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name='self_attn_layer_norm')
    norm2 = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name='final_layer_norm')
    dense = functools.partial(Dense, kernel_init=_bert_init, bias_init=nn.initializers.zeros,
                              dtype=self.dtype)
    fc1, fc2 = dense(int(self.dim * self.mlp_ratio), name='fc1'), dense(self.dim, name='fc2')

    def drop(rate, y):
      return nn.Dropout(rate)(y, deterministic=deterministic) if rate else y

    def ffn(y):
      return fc2(drop(self.activation_dropout, gelu(fc1(y))))

    if self.layer_norm_first:
      x = x + drop(self.dropout, attn(norm1(x), deterministic))
      f = ffn(norm2(x))
      return x + drop(self.dropout, f), f
    x = norm1(x + drop(self.dropout, attn(x, deterministic)))
    f = ffn(x)
    return norm2(x + drop(self.dropout, f)), f


class AudioEncoder(nn.Module):
  """The wav2vec 2.0 / HuBERT / data2vec-audio encoder (Baevski et al. 2020; Hsu et al. 2021;
  Baevski et al. 2022) for self-supervised learning::

      conv = grad_multiply(feature_extractor(audio))        # (B, T, C)
      features = layer_norm(conv)                           # the quantizer's input
      x = post_extract_proj(features)                       # (B, T, D)
      x = where(mask, mask_token, x)                        # masked prediction (optional)
      x = x + pos_conv(x)
      x = encoder_layer_norm(x)                             # post-LN only
      x = layers(x)                                         # depth EncoderLayers
      x = encoder_layer_norm(x)                             # pre-LN only

  Input is a (B, L) float waveform (16 kHz; normalising it per clip is the data's / method's
  job). ``__call__`` gives the (B, D) mean of the final frames; :meth:`encode` everything a
  method needs. Parameter names: module docstring (fairseq's).
  """
  conv_layers: tuple[tuple[int, int, int], ...] = CONV_LAYERS
  conv_mode: str = 'group_norm'
  conv_bias: bool = False
  conv_impl: str = 'auto'
  embed_dim: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  pos_conv_kernel: int = 128
  pos_conv_groups: int = 16
  layer_norm_first: bool = False
  dropout: float = 0.0
  attention_dropout: float = 0.0
  activation_dropout: float = 0.0
  dropout_input: float = 0.0          # on the projected frames (fairseq dropout_input)
  feature_grad_mult: float = 1.0      # fairseq's feature_grad_mult (wav2vec 2.0 base: 0.1)
  layer_norm_eps: float = _EPS
  dtype: Any = jnp.float32

  @property
  def feature_dim(self) -> int:
    """Width of the pooled feature: ``embed_dim``."""
    return self.embed_dim

  def num_frames(self, length: int) -> int:
    """Frames T of a ``length``-sample clip: ``floor((L - k) / s) + 1`` per conv layer
    (16000 -> 49 with the default layers)."""
    return conv_output_length(length, self.conv_layers)

  def transformer_keys(self) -> tuple[str, ...]:
    """Top-level parameter names of the transformer (fairseq's ``encoder``: pos_conv, the blocks,
    encoder_layer_norm), the part data2vec-audio's teacher keeps as an EMA
    (``ema_transformer_only``); the rest (feature encoder, layer_norm, post_extract_proj) is
    the student's."""
    return ('pos_conv', 'encoder_layer_norm') + tuple(f'layers_{i}' for i in range(self.depth))

  def setup(self):
    self.feature_extractor = ConvFeatureEncoder(self.conv_layers, self.conv_mode, self.conv_bias,
                                                self.conv_impl, self.dtype)
    self.layer_norm = nn.LayerNorm(self.layer_norm_eps, dtype=jnp.float32)
    if self.conv_layers[-1][0] != self.embed_dim:   # fairseq has none when the widths agree
      self.post_extract_proj = Dense(self.embed_dim, kernel_init=_torch_linear_init,
                                     bias_init=nn.initializers.zeros, dtype=self.dtype)
    self.pos_conv = ConvPositionalEmbedding(self.pos_conv_kernel, self.pos_conv_groups,
                                            self.conv_impl, self.dtype)
    # Before the blocks (post-LN) or after them (pre-LN): fairseq's encoder.layer_norm either way.
    self.encoder_layer_norm = nn.LayerNorm(
        self.layer_norm_eps, dtype=jnp.float32 if self.layer_norm_first else self.dtype)
    self.layers = [
        EncoderLayer(self.embed_dim, self.num_heads, self.mlp_ratio, self.layer_norm_first,
                     self.dropout, self.attention_dropout, self.activation_dropout,
                     self.layer_norm_eps, self.dtype, name=f'layers_{i}')
        for i in range(self.depth)]

  # ------------------------------------------------------------------ pieces

  def _deterministic(self, train: bool) -> bool:
    return not (train and self.has_rng('dropout'))

  def _drop(self, rate: float, x: Array, deterministic: bool) -> Array:
    """Inverted dropout (nn.Dropout's), written out: a setup module's methods make no
    submodules."""
    if not rate or deterministic:
      return x
    keep = jax.random.bernoulli(self.make_rng('dropout'), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))

  def embed(self, audio: Array, train: bool = False, *, mask: Array | None = None,
            mask_token: Array | None = None) -> dict[str, Array]:
    """The encoder's input side: ``conv`` (B, T, C) the feature encoder's output (before its
    layer norm; wav2vec 2.0's feature penalty), ``features`` (B, T, C) the layer-normed conv
    features (unmasked; wav2vec 2.0's quantizer input) and ``inputs`` (B, T, D) the projected
    frames with masked frames replaced by ``mask_token``: what the position convolution and the
    blocks take."""
    # fairseq scales the gradient right at the feature encoder's output, so the feature penalty's
    # gradient into the convolutions is scaled as well.
    conv = grad_multiply(self.feature_extractor(audio), self.feature_grad_mult)
    features = self.layer_norm(conv)
    x = features.astype(self.dtype)
    if self.conv_layers[-1][0] != self.embed_dim:
      x = self.post_extract_proj(x)
    x = self._drop(self.dropout_input, x, self._deterministic(train))
    if mask is not None:
      if mask_token is None:
        raise ValueError('encode(mask=...) needs mask_token, a (embed_dim,) array')
      if mask.shape != x.shape[:2]:
        raise ValueError(f'mask must be (B, T) = {x.shape[:2]}, got {mask.shape}')
      x = jnp.where(mask[..., None].astype(bool), mask_token.astype(x.dtype), x)
    return {'conv': conv, 'features': features, 'inputs': x}

  def _transformer(self, x: Array, train: bool) -> tuple[Array, list[Array], list[Array]]:
    """Projected frames -> (final frames, each block's output, each block's FFN output)."""
    det = self._deterministic(train)
    x = x + self.pos_conv(x)
    if not self.layer_norm_first:
      x = self.encoder_layer_norm(x)
    x = self._drop(self.dropout, x, det)
    layers, ffn = [], []
    for layer in self.layers:
      x, f = layer(x, det)
      layers.append(x)
      ffn.append(f)
    if self.layer_norm_first:
      x = self.encoder_layer_norm(x)
    return x.astype(jnp.float32), layers, ffn

  # ------------------------------------------------------------------ entry points

  def encode(self, audio: Array, train: bool = False, *, mask: Array | None = None,
             mask_token: Array | None = None) -> dict[str, Any]:
    """Run the encoder (wav2vec 2.0, Baevski et al. 2020).

    Args:
      audio: (B, L) float waveform.
      train: enables dropout (with a 'dropout' rng).
      mask: optional (B, T) bool, T = ``num_frames(L)``; True frames' projected inputs are
        replaced by ``mask_token`` before the position convolution (wav2vec 2.0 / HuBERT /
        data2vec-audio time masking; the span sampling is the method's).
      mask_token: (embed_dim,) array owned by the calling method; required with ``mask``.
    Returns:
      dict with ``conv`` (B, T, C) the feature encoder's output before its layer norm (wav2vec
      2.0's feature penalty); ``features`` (B, T, C) the layer-normed conv features before the
      projection, unmasked (what wav2vec 2.0 quantises); ``frames`` (B, T, D) the final output
      (float32);
      ``layers`` the depth blocks' outputs (B, T, D) (pre-LN: before the final norm); ``ffn``
      the depth blocks' FFN outputs (B, T, D) before dropout, residual and (post-LN) final norm,
      fairseq's ``layer_result`` that data2vec-audio averages into its targets.
    """
    emb = self.embed(audio, train, mask=mask, mask_token=mask_token)
    frames, layers, ffn = self._transformer(emb['inputs'], train)
    return {'conv': emb['conv'], 'features': emb['features'], 'frames': frames, 'layers': layers,
            'ffn': ffn}

  def __call__(self, audio: Array, train: bool = False) -> Array:
    """(B, D) mean of the final frames: the evaluation feature (the pooled representation
    linear probes and SUPERB-style utterance tasks use)."""
    return self.encode(audio, train)['frames'].mean(axis=1)


# ----------------------------------------------------------------------------- presets

AUDIO_PRESETS: dict[str, dict[str, Any]] = {
    # wav2vec 2.0 / HuBERT / data2vec-audio BASE (fairseq base_960h): 95.0M with the quantizer.
    'wav2vec2_base': dict(conv_layers=CONV_LAYERS, conv_mode='group_norm', conv_bias=False,
                          embed_dim=768, depth=12, num_heads=12, pos_conv_kernel=128,
                          pos_conv_groups=16, layer_norm_first=False),
    # LARGE as trained on LV-60k (fairseq wav2vec2_large_librivox; HuBERT / data2vec large alike):
    # LayerNorm feature encoder with conv bias, pre-LN blocks.
    'wav2vec2_large': dict(conv_layers=CONV_LAYERS, conv_mode='layer_norm', conv_bias=True,
                           embed_dim=1024, depth=24, num_heads=16, pos_conv_kernel=128,
                           pos_conv_groups=16, layer_norm_first=True),
    # CPU-sized for the built-in 1 s clips (49 frames): the same strides, 64 conv channels, a
    # 32-frame (0.64 s) position kernel in 8 groups of 16 channels, 4 post-LN blocks of 128.
    'audio_tiny': dict(conv_layers=tuple((64, k, s) for _, k, s in CONV_LAYERS),
                       conv_mode='group_norm', conv_bias=False, embed_dim=128, depth=4,
                       num_heads=4, pos_conv_kernel=32, pos_conv_groups=8,
                       layer_norm_first=False),
}


def wav2vec2_base(**kw) -> AudioEncoder:
  """wav2vec 2.0 BASE (Baevski et al. 2020): 7 x 512 conv, D=768, 12 post-LN blocks; kw override."""
  return AudioEncoder(**{**AUDIO_PRESETS['wav2vec2_base'], **kw})


def wav2vec2_large(**kw) -> AudioEncoder:
  """wav2vec 2.0 LARGE (LV-60k): LayerNorm conv encoder, D=1024, 24 pre-LN blocks; kw override."""
  return AudioEncoder(**{**AUDIO_PRESETS['wav2vec2_large'], **kw})


def audio_tiny(**kw) -> AudioEncoder:
  """A CPU-sized encoder of the same shape: 7 x 64 conv, D=128, 4 blocks; kw override."""
  return AudioEncoder(**{**AUDIO_PRESETS['audio_tiny'], **kw})
