"""CutPaste (Li, Sohn, Yoon & Pfister, "CutPaste: Self-Supervised Learning for Anomaly Detection and
Localization", CVPR 2021).

Every normal training image is shown three times: as is (class 0), with *CutPaste* (class 1: a
rectangle of area ratio ~ U[0.02, 0.15] and log-uniform aspect ratio in [0.3, 1/0.3] is cut from a
random place, colour-jittered and pasted at another random place) and with *CutPaste-scar*
(class 2: a thin, long rectangle, rotated by U[-45, 45] degrees, pasted the same way). A head
on the backbone classifies the three (``losses.pretext_cross_entropy``; the paper's 3-way
variant). Anomalies are then scored by a Gaussian density estimator fitted to the features of
normal images (``ssl_jax.eval.anomaly``).

The augmentations run on device: ``paste_patch`` samples every destination pixel inside the
(rotated) destination rectangle from the corresponding source pixel (nearest neighbour), so
shapes stay static and everything is jittable with explicit keys.

Config (``config.method``): area_ratio, aspect_ratio, scar_width, scar_length (fractions of the
image side), scar_angle (degrees), patch_jitter, head_hidden_dim, head_layers.
"""
from __future__ import annotations

import dataclasses

import math

import jax
import jax.numpy as jnp

from ssl_jax.data import augment
from ssl_jax.methods.pretext.rotation import PretextClassifier

NUM_CLASSES = 3   # normal, CutPaste, CutPaste-scar


def paste_patch(img, source, src_center, dst_center, size, angle):
  """Pastes a (h, w) rectangle of ``source`` centred at ``src_center`` onto ``img`` centred at
  ``dst_center``, rotated by ``angle`` radians. HWC images; centres (y, x) and size (h, w) in
  pixels (may be traced floats). Returns (pasted image, mask (H, W) of pasted pixels)."""
  hh, ww = img.shape[0], img.shape[1]
  yy, xx = jnp.meshgrid(jnp.arange(hh, dtype=jnp.float32) + 0.5,
                        jnp.arange(ww, dtype=jnp.float32) + 0.5, indexing='ij')
  dy, dx = yy - dst_center[0], xx - dst_center[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  u = cos * dy + sin * dx          # destination offset in the patch's own (rotated) frame
  v = -sin * dy + cos * dx
  mask = (jnp.abs(u) < size[0] / 2) & (jnp.abs(v) < size[1] / 2)
  sy = jnp.clip(jnp.floor(src_center[0] + u).astype(jnp.int32), 0, hh - 1)
  sx = jnp.clip(jnp.floor(src_center[1] + v).astype(jnp.int32), 0, ww - 1)
  patch = source[sy, sx]
  return jnp.where(mask[..., None], patch, img), mask


def _centers(key, side, size_yx):
  """Uniform centre of an axis-aligned (h, w) box inside a side x side image."""
  lo = jnp.asarray(size_yx) / 2
  return jax.random.uniform(key, (2,), jnp.float32, lo, side - lo)


def cutpaste(key, img, area_ratio=(0.02, 0.15), aspect_ratio=0.3, jitter=0.1):
  """CutPaste (Sec. 3.1): rectangle of area ratio ~ U(area_ratio), aspect ~ logU[r, 1/r]; the
  pasted content is colour-jittered (brightness/contrast/saturation/hue ``jitter``)."""
  side = img.shape[0]
  k_area, k_aspect, k_src, k_dst, k_jit = jax.random.split(key, 5)
  area = jax.random.uniform(k_area, (), jnp.float32, *area_ratio) * side * side
  log_r = jax.random.uniform(k_aspect, (), jnp.float32, math.log(aspect_ratio),
                             -math.log(aspect_ratio))
  aspect = jnp.exp(log_r)                          # w / h
  h = jnp.clip(jnp.sqrt(area / aspect), 1.0, side - 1.0)
  w = jnp.clip(jnp.sqrt(area * aspect), 1.0, side - 1.0)
  source = augment.color_jitter(k_jit, img, jitter, jitter, jitter, jitter) if jitter else img
  return paste_patch(img, source, _centers(k_src, side, (h, w)), _centers(k_dst, side, (h, w)),
                     (h, w), 0.0)


def cutpaste_scar(key, img, width=(0.03, 0.08), length=(0.15, 0.3), max_angle=45.0, jitter=0.1):
  """CutPaste-scar (Sec. 3.1): a thin rectangle (width, length as fractions of the side; the paper
  uses [2, 16] x [10, 25] px at 256 px), rotated by U[-max_angle, max_angle] degrees."""
  side = img.shape[0]
  k_w, k_l, k_a, k_src, k_dst, k_jit = jax.random.split(key, 6)
  w = jnp.maximum(jax.random.uniform(k_w, (), jnp.float32, *width) * side, 1.0)
  h = jnp.maximum(jax.random.uniform(k_l, (), jnp.float32, *length) * side, 2.0)
  angle = jnp.deg2rad(jax.random.uniform(k_a, (), jnp.float32, -max_angle, max_angle))
  source = augment.color_jitter(k_jit, img, jitter, jitter, jitter, jitter) if jitter else img
  reach = jnp.sqrt(h * h + w * w) / 2               # keep the rotated patch inside the image
  return paste_patch(img, source, _centers(k_src, side, (h, w)),
                     _centers(k_dst, side, (2 * reach, 2 * reach)), (h, w), angle)


class CutPaste(PretextClassifier):
  """3-way classification: normal / CutPaste / CutPaste-scar."""

  num_classes = NUM_CLASSES
  acc_metric = 'cutpaste_acc'
  normalize_views = False   # paste in [0, 1], then normalise as ``Method.normalize`` does

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(PretextClassifier.Hparams):
    area_ratio: tuple[float, float]
    aspect_ratio: float
    scar_width: tuple[float, float]
    scar_length: tuple[float, float]
    scar_angle: float
    patch_jitter: float

  def views(self, batch, rng):
    k_aug, k_cp, k_scar = jax.random.split(rng, 3)
    x = super().views(batch, k_aug)['view0']
    m = self.hp
    b = x.shape[0]
    cp = jax.vmap(lambda k, im: cutpaste(k, im, tuple(m.area_ratio), m.aspect_ratio,
                                         m.patch_jitter)[0])(jax.random.split(k_cp, b), x)
    scar = jax.vmap(lambda k, im: cutpaste_scar(k, im, tuple(m.scar_width), tuple(m.scar_length),
                                                m.scar_angle, m.patch_jitter)[0])(
                                                    jax.random.split(k_scar, b), x)
    images = jnp.concatenate([x, cp, scar], axis=0)
    images = augment.normalize(images, augment.IMAGENET_MEAN, augment.IMAGENET_STD)
    labels = jnp.repeat(jnp.arange(NUM_CLASSES, dtype=jnp.int32), b)
    return {'images': images, 'labels': labels}
