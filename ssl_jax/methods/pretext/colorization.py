"""Colorful Image Colorization (Zhang, Isola & Efros, ECCV 2016), the class-rebalanced
classification variant.

The network sees only the lightness of the image (the CIE L channel, given to the backbone as a
grey RGB image so that the eval-time input format is unchanged) and predicts, for every output
cell, a distribution over the ``Q`` quantised in-gamut ab colour bins (grid size 10 in CIE Lab;
``ab_gamut_bins``). Targets are soft-encoded (the 5 nearest bin centres of the true ab, Gaussian
weights with sigma 5) and each pixel's term is weighted by the class-rebalancing weight of its
nearest bin, ``w ~ ((1 - lambda) p~ + lambda / Q)^-1`` with the smoothed empirical bin prior p~ of
the training images and lambda = 0.5 (Sec. 2.2, Eq. 2-4; ``losses.colorization_rebalanced_ce``).

Departure from the paper: the backbones here return a pooled feature, so the ab distributions are
decoded from that global feature by a small decoder (Dense -> (H/4, W/4, C) -> 3x3 conv -> 1x1 conv
to Q logits) at a quarter of the input resolution (the paper's output stride is 4 too), instead of
the paper's fully convolutional VGG head. The prior is estimated from ``prior_images`` images of
the training split when training first needs it (eval and export need no training data).

Evaluation (``normalize``, so ``features`` and fine-tuning) sees the lightness too, the network's
only input. On grey data every pixel has a = b = 0 and there is no colour to learn: the built-in
run uses ``mnist5k_color`` (digits drawn in a class-dependent colour, ``ssl_jax.data.sources``).

Config (``config.method``): decoder_dim, rebalance_lambda, soft_neighbours, soft_sigma,
prior_images.
"""
from __future__ import annotations

import dataclasses

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import losses
from ssl_jax.data import augment, sources
from ssl_jax.data import image_ops
from ssl_jax.data.image_ops import rgb_to_lab
from ssl_jax.methods.base import Method, apply_module, init_module
from ssl_jax.models.norm import BatchNorm

AB_GRID = 10.0
OUTPUT_STRIDE = 4


@functools.lru_cache(maxsize=1)
def ab_gamut_bins(levels: int = 64) -> np.ndarray:
  """(Q, 2) centres (multiples of 10) of the ab cells reached by some sRGB colour.

  Computed by converting a ``levels^3`` grid of sRGB colours to Lab; with 64 levels this gives the
  in-gamut set of Zhang et al.'s 313 bins up to the cells only touched by a sliver of the gamut.
  """
  g = np.linspace(0, 1, levels)
  rgb = np.stack(np.meshgrid(g, g, g, indexing='ij'), -1).reshape(-1, 3)
  ab = rgb_to_lab(rgb)[:, 1:]
  cells = np.unique(np.round(ab / AB_GRID).astype(np.int64), axis=0)
  return (cells * AB_GRID).astype(np.float32)


def soft_encode(ab, centres, neighbours: int = 5, sigma: float = 5.0):
  """(N, 2) ab -> (N, Q) soft targets: Gaussian(sigma) weights on the ``neighbours`` nearest bin
  centres, normalised to sum 1 (Zhang et al. Sec. 2.1)."""
  d2 = jnp.sum((ab[:, None, :] - centres[None]) ** 2, axis=-1)          # (N, Q)
  neg, idx = jax.lax.top_k(-d2, neighbours)
  w = jnp.exp(neg / (2 * sigma ** 2))
  w = w / jnp.sum(w, axis=-1, keepdims=True)
  return jnp.sum(jax.nn.one_hot(idx, centres.shape[0]) * w[..., None], axis=1)


def rebalance_weights(prior, centres, lam: float = 0.5, sigma: float = 5.0):
  """Class-rebalancing weights (Zhang et al. Eq. 4): smooth the empirical prior p with a
  Gaussian(sigma) over the bin centres, w = ((1 - lam) p~ + lam / Q)^-1, normalised so that
  sum_q p~_q w_q = 1. numpy in, numpy out."""
  prior = np.asarray(prior, np.float64)
  prior = prior / prior.sum()
  d2 = ((centres[:, None] - centres[None]) ** 2).sum(-1)
  k = np.exp(-d2 / (2 * sigma ** 2))
  smooth = k @ prior
  smooth = smooth / smooth.sum()
  w = 1.0 / ((1 - lam) * smooth + lam / len(prior))
  return (w / (smooth * w).sum()).astype(np.float32)


def empirical_prior(images_uint8, centres) -> np.ndarray:
  """Histogram of the nearest ab bin over every pixel of ``images_uint8`` (N, H, W, 3)."""
  ab = rgb_to_lab(images_uint8.reshape(-1, 3).astype(np.float64) / 255.0)[:, 1:]
  nearest = np.argmin(((ab[:, None] - centres[None]) ** 2).sum(-1), axis=1)
  return np.bincount(nearest, minlength=len(centres)).astype(np.float64)


def pool_ab(lab, stride: int):
  """(B, H, W, 3) Lab -> (B, H/s, W/s, 2) ab averaged over stride x stride cells."""
  b, h, w, _ = lab.shape
  ab = lab[..., 1:].reshape(b, h // stride, stride, w // stride, stride, 2)
  return ab.mean(axis=(2, 4))


GRAY_INPUT = {'color': 'gray', 'mean': augment.IMAGENET_MEAN, 'std': augment.IMAGENET_STD}


def lightness_input(rgb):
  """[0, 1] RGB (B, H, W, 3) -> the network input: grey (luma) replicated to 3 channels, then
  ImageNet-normalised, so checkpoints keep the RGB input format."""
  return image_ops.encoder_input(rgb, **GRAY_INPUT)


class ColorDecoder(nn.Module):
  """Pooled feature -> (B, h, w, Q) ab-bin logits at 1/OUTPUT_STRIDE of the input resolution."""
  grid: int
  dim: int
  num_bins: int

  @nn.compact
  def __call__(self, h, train: bool = False):
    x = nn.Dense(self.grid * self.grid * self.dim, name='fc')(h)
    x = nn.relu(x.reshape(-1, self.grid, self.grid, self.dim))
    x = nn.Conv(self.dim, (3, 3), padding='SAME', use_bias=False, name='conv')(x)
    x = nn.relu(BatchNorm(use_running_average=not train, momentum=0.9, name='bn')(x))
    return nn.Conv(self.num_bins, (1, 1), name='logits')(x).astype(jnp.float32)


class Colorization(Method):
  """Predict the quantised ab colour of every output cell from the lightness."""

  num_views = 1
  normalize_views = False   # [0, 1] crops: Lab targets and the lightness input come from them

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams):
    decoder_dim: int = 64
    prior_images: int = 500
    rebalance_lambda: float = 0.5
    soft_neighbours: int = 5
    soft_sigma: float = 5.0

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.centres = ab_gamut_bins()
    size = config.data.image_size
    if size % OUTPUT_STRIDE:
      raise ValueError(f'config.data.image_size={size} must be a multiple of {OUTPUT_STRIDE}')
    self.decoder = ColorDecoder(size // OUTPUT_STRIDE, m.decoder_dim, len(self.centres))

  @functools.cached_property
  def class_weights(self) -> np.ndarray:
    """(Q,) class-rebalancing weights from the ab prior of the first ``prior_images`` training
    images. Read when training first needs them (``views``, traced into the train step), not at
    construction: evaluating, fine-tuning or exporting a colorization run needs no training data."""
    m = self.hp
    src = sources.get_source(self.config.data, self.config.data.train_split)
    n = min(len(src), m.prior_images)
    imgs = np.stack([src[i]['image'] for i in range(n)])
    return rebalance_weights(empirical_prior(imgs, self.centres), self.centres,
                             m.rebalance_lambda)

  def views(self, batch, rng):
    m = self.hp
    rgb = super().views(batch, rng)['view0']                   # [0, 1]
    lab = rgb_to_lab(rgb)
    ab = pool_ab(lab, OUTPUT_STRIDE)
    centres = jnp.asarray(self.centres)
    flat = ab.reshape(-1, 2)
    target = soft_encode(flat, centres, m.soft_neighbours, m.soft_sigma)
    weight = jnp.asarray(self.class_weights)[jnp.argmax(target, axis=-1)]
    return {'gray': lightness_input(rgb), 'target': target.reshape(ab.shape[:3] + (-1,)),
            'weight': weight.reshape(ab.shape[:3])}

  def encoder_input(self):
    """Eval-time input (features, fine-tuning, export): the *lightness* of the images, as in
    training — the network only ever sees grey input (the paper evaluates its features on the L
    channel)."""
    return dict(GRAY_INPUT)

  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    bb_params, bb_stats = init_module(self.backbone, k1, x)
    dc_params, dc_stats = init_module(self.decoder, k2, jnp.zeros((2, self.feature_dim)))
    return ({'backbone': bb_params, 'decoder': dc_params},
            {'batch_stats': {'backbone': bb_stats, 'decoder': dc_stats}})

  def loss(self, params, state, views, rng):
    stats = state.buffers['batch_stats']
    h, bb_stats = apply_module(self.backbone, params['backbone'], stats['backbone'],
                               views['gray'], train=True, rngs={'dropout': rng})
    logits, dc_stats = apply_module(self.decoder, params['decoder'], stats['decoder'], h,
                                    train=True)
    loss = losses.colorization_rebalanced_ce(logits, views['target'], views['weight'])
    acc = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(views['target'], -1))
    buffers = dict(state.buffers, batch_stats={'backbone': bb_stats, 'decoder': dc_stats})
    return loss, ({'bin_acc': acc}, buffers)
