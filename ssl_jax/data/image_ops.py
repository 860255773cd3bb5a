"""Image operations several methods share (pure jnp on NHWC batches, jittable).

They live in data/ so that no method family imports another's file (docs/architecture.md): CMC's
views use MultiMAE's Sobel edges and colorization's Lab conversion, SiT uses RotNet's rotations.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NUM_ROTATIONS = 4
# ITU-R 601-2 luma, as PIL `convert('L')` (torchvision's tensor op uses 0.2989).
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def rotate90(images, k: int):
  """Rotates NHWC ``images`` by ``k`` x 90 degrees counter-clockwise (np.rot90 on the H, W axes)."""
  return jnp.rot90(images, k, axes=(1, 2))


def rotate90_per_example(images, ks):
  """Rotates image i of NHWC square ``images`` by ``ks[i]`` x 90 degrees counter-clockwise.

  ``ks`` may be traced (B,) ints: the four rotations are computed and one is selected per
  example, so shapes stay static.
  """
  if images.shape[1] != images.shape[2]:
    raise ValueError(f'rotations need square images, got {images.shape[1:3]}')
  rots = jnp.stack([rotate90(images, k) for k in range(NUM_ROTATIONS)])  # (4, B, H, W, C)
  onehot = jax.nn.one_hot(ks, NUM_ROTATIONS, dtype=images.dtype)        # (B, 4)
  return jnp.einsum('rbhwc,br->bhwc', rots, onehot)


def all_rotations(images):
  """(4B, H, W, C) images [rot0 batch; rot90 batch; rot180 batch; rot270 batch] and labels (4B,)."""
  b = images.shape[0]
  x = jnp.concatenate([rotate90(images, k) for k in range(NUM_ROTATIONS)], axis=0)
  y = jnp.repeat(jnp.arange(NUM_ROTATIONS, dtype=jnp.int32), b)
  return x, y


_SOBEL_X = jnp.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_edges(x01):
  """Sobel gradient magnitude sqrt(gx^2 + gy^2) of the grey image, (B, H, W, 1)."""
  gray = jnp.mean(x01[..., :3], axis=-1, keepdims=True)
  kernels = jnp.stack([_SOBEL_X, _SOBEL_X.T], axis=-1)[:, :, None, :]  # HWIO (3, 3, 1, 2)
  padded = jnp.pad(gray, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='edge')
  g = jax.lax.conv_general_dilated(padded, kernels, (1, 1), 'VALID',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return jnp.sqrt(jnp.sum(g ** 2, axis=-1, keepdims=True) + 1e-12)


_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb):
  """sRGB in [0, 1] (..., 3) -> CIE Lab (D65, 2 degree observer), the formula of skimage.color."""
  xp = jnp if isinstance(rgb, jax.Array) else np
  lin = xp.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
  xyz = (lin @ _RGB_TO_XYZ.T.astype(lin.dtype)) / _WHITE_D65.astype(lin.dtype)
  eps = (6 / 29) ** 3
  f = xp.where(xyz > eps, xp.cbrt(xp.maximum(xyz, eps)), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
  l = 116 * f[..., 1] - 16
  a = 500 * (f[..., 0] - f[..., 1])
  b = 200 * (f[..., 1] - f[..., 2])
  return xp.stack([l, a, b], axis=-1)


# An encoder's input colour: what the network sees of a [0, 1] RGB image before (x - mean) / std.
ENCODER_COLORS = {
    'rgb': 'the RGB image',
    'gray': 'luma 0.299 R + 0.587 G + 0.114 B, replicated to 3 channels',
    'cie_l': 'CIE L / 100 (D65), replicated to 3 channels',
}


def encoder_input(x01, color: str = 'rgb', mean=None, std=None):
  """[0, 1] RGB (..., 3) -> an encoder's input: the ``color`` transform (:data:`ENCODER_COLORS`),
  then ``(x - mean) / std`` per channel when ``mean`` is given. numpy in, numpy out; jnp likewise.

  One definition for a method's eval input (``Method.normalize``) and the exported encoder's
  preprocessing (``encoder.json``: color, mean, std; ``ssl_jax.export.encoder.preprocess``).
  """
  xp = jnp if isinstance(x01, jax.Array) else np
  _check_color(color)
  if color != 'rgb':
    if color == 'gray':
      one = x01 @ xp.asarray(GRAY_WEIGHTS, x01.dtype)
    else:
      one = rgb_to_lab(x01)[..., 0] / 100
    x01 = xp.broadcast_to(one[..., None].astype(x01.dtype), x01.shape)
  if mean is not None:
    x01 = (x01 - xp.asarray(mean, x01.dtype)) / xp.asarray(std, x01.dtype)
  return x01


def _check_color(color: str):
  if color not in ENCODER_COLORS:
    raise ValueError(f'encoder input color={color!r}: known {sorted(ENCODER_COLORS)}')


def encoder_input_spec(color: str = 'rgb', mean=None, std=None) -> dict:
  """:func:`encoder_input`'s kwargs as JSON (lists of floats), the colour checked: what an export
  records as the encoder's preprocessing (``encoder.json``, ``timm_config.json``'s ``input``)."""
  _check_color(color)
  as_list = lambda v: None if v is None else [float(x) for x in v]
  return {'color': color, 'mean': as_list(mean), 'std': as_list(std)}
