"""CMC (Tian, Krishnan & Isola, "Contrastive Multiview Coding", ECCV 2020).

An image is seen through several *views* that are different channels of it, not different
augmentations: the paper's main setting splits its CIE Lab colour into the lightness L and the
colour ab. Each view has its own encoder (the configured backbone, its own parameters), a linear
layer to a ``feature_dim`` (128) embedding, L2-normalised, and its own memory bank (one row per
training image, momentum ``bank_momentum`` = 0.5, as InstDis's). Each view's embedding is
contrasted against the *other* views' banks, the positive being the same image's row
(``losses.cmc_loss``: a full softmax over all n rows, temperature 0.07, where the official code
samples K = 16,384 negatives); with more than two views ``graph`` is 'full' (every pair) or 'core'
(the first view with each other one). All views come from the same random resized crop (and flip);
the paper adds no colour augmentation, which would mix the views.

Views (``config.method.views``, names from :data:`VIEWS`): 'L' (CIE L, normalised with the official
code's range, replicated to 3 channels so that the encoder keeps an RGB-shaped input), 'ab' (CIE a
and b, 2 channels, official range normalisation), 'rgb' (ImageNet-normalised RGB), 'edges' (Sobel
magnitude of the grey image, 1 channel: a view of grey data, which has no colour). The *first*
view's encoder is ``params['backbone']``, the one exported and fine-tuned (``normalize`` gives it
its view), so it must be a 3-channel view ('L' or 'rgb'); the others live in
``params['view_encoders']``. ``features`` concatenates the pooled features of the
``feature_views`` (the paper evaluates L and ab concatenated; default: all views).

On grey images ab is zero everywhere and the L / ab split has nothing to contrast: use colour data
(the built-in run uses ``mnist5k_color``) or the views ('L', 'edges').

Config (``config.method``): views, graph, feature_views, temperature, feature_dim, bank_momentum,
bank_size (0: the size of ``data.train_split``).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.data import augment
from ssl_jax.data import image_ops
from ssl_jax.data.image_ops import rgb_to_lab, sobel_edges
from ssl_jax.methods.base import apply_module, init_module
from ssl_jax.methods.contrastive.instdis import InstDis, init_bank

# The official CMC code's a / b normalisation (L's: ENCODER_INPUTS): each range's middle, half-width.
_A_RANGE = (-86.183, 98.233)
_B_RANGE = (-107.857, 94.478)


def _scale(x, lo, hi):
  return (x - (lo + hi) / 2) / ((hi - lo) / 2)


# The exported encoder's input for each 3-channel first view (image_ops.encoder_input kwargs):
# CIE L / 100 scaled to [-1, 1] is (L - 50) / 50, the official code's L normalisation.
ENCODER_INPUTS = {'L': {'color': 'cie_l', 'mean': (0.5,) * 3, 'std': (0.5,) * 3},
                  'rgb': {'color': 'rgb', 'mean': augment.IMAGENET_MEAN,
                          'std': augment.IMAGENET_STD}}


def l_view(rgb01):
  """[0, 1] RGB (..., 3) -> CIE L in [-1, 1], replicated to 3 channels."""
  return image_ops.encoder_input(rgb01, **ENCODER_INPUTS['L'])


def ab_view(rgb01):
  """[0, 1] RGB (..., 3) -> CIE a, b scaled by their ranges, 2 channels."""
  lab = rgb_to_lab(rgb01)
  return jnp.stack([_scale(lab[..., 1], *_A_RANGE), _scale(lab[..., 2], *_B_RANGE)], axis=-1)


def rgb_view(rgb01):
  return image_ops.encoder_input(rgb01, **ENCODER_INPUTS['rgb'])


def edges_view(rgb01):
  """Sobel magnitude of the grey image (at most 4 sqrt 2 on [0, 1] input), scaled to ~[0, 1]."""
  return sobel_edges(rgb01) / 4.0


@dataclasses.dataclass(frozen=True)
class View:
  channels: int
  fn: Callable  # (B, H, W, 3) float RGB in [0, 1] -> (B, H, W, channels)


VIEWS = {'L': View(3, l_view), 'ab': View(2, ab_view), 'rgb': View(3, rgb_view),
         'edges': View(1, edges_view)}


class CMC(InstDis):
  """One encoder, head and memory bank per view; each view contrasted with the others' banks.

  InstDis's settings (temperature, feature_dim, bank momentum and size, the linear head) and its
  one host crop with the image's index; the views are that crop's channels."""

  features_from_encoder = False   # eval: the feature views' encoders on their channel transforms

  normalize_views = False   # [0, 1] crops: each view applies its own normalisation

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(InstDis.Hparams):
    views: tuple[str, ...]
    graph: str = 'full'
    feature_views: tuple[str, ...] = ()   # (): all views

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.view_names = tuple(m.views)
    unknown = [v for v in self.view_names if v not in VIEWS]
    if unknown or len(self.view_names) < 2 or len(set(self.view_names)) < len(self.view_names):
      raise ValueError(f'config.method.views={self.view_names}: give two or more distinct names '
                       f'from {sorted(VIEWS)}' + (f' (unknown: {unknown})' if unknown else ''))
    if VIEWS[self.view_names[0]].channels != 3:
      raise ValueError(f'config.method.views[0]={self.view_names[0]!r}: the first view\'s encoder '
                       "is the exported / fine-tuned one and needs a 3-channel view ('L' or "
                       "'rgb'); put it first")
    self.graph = m.graph
    losses.cmc_view_pairs(len(self.view_names), self.graph)   # validates the name
    self.feature_views = tuple(m.feature_views or self.view_names)
    bad = [v for v in self.feature_views if v not in self.view_names]
    if bad:
      raise ValueError(f'config.method.feature_views={self.feature_views}: {bad} not among '
                       f'config.method.views={self.view_names}')
    self.encoder_dim = self.feature_dim          # one encoder's pooled width
    self.feature_dim = self.encoder_dim * len(self.feature_views)

  # -- data ---------------------------------------------------------------------------------------
  def views(self, batch, rng):
    out = super().views(batch, rng)        # {'view0': [0, 1] crop, 'index'}
    rgb = out.pop('view0')
    return dict(out, **{name: VIEWS[name].fn(rgb) for name in self.view_names})

  def encoder_input(self):
    """Eval-time input of the exported / fine-tuned encoder: the first view of the images."""
    return dict(ENCODER_INPUTS[self.view_names[0]])

  # -- parameters ---------------------------------------------------------------------------------
  def _encoder(self, tree, name):
    """The first view's entry is tree['backbone'], the others' tree['view_encoders'][name]."""
    return tree['backbone'] if name == self.view_names[0] else tree['view_encoders'][name]

  def _set_encoder(self, tree, name, value):
    """Writes ``value`` where :meth:`_encoder` reads it."""
    if name == self.view_names[0]:
      tree['backbone'] = value
    else:
      tree.setdefault('view_encoders', {})[name] = value

  def init(self, rng, batch):
    keys = jax.random.split(rng, 2 * len(self.view_names) + 1)
    size = batch['view0'].shape[1:3]
    params, stats = {'heads': {}}, {}
    for i, name in enumerate(self.view_names):
      x = jnp.zeros((2,) + size + (VIEWS[name].channels,), jnp.float32)
      p, s = init_module(self.backbone, keys[2 * i], x)
      self._set_encoder(params, name, p)
      self._set_encoder(stats, name, s)
      params['heads'][name] = self.head.init(keys[2 * i + 1],
                                             jnp.zeros((2, self.encoder_dim)))['params']
    bank_keys = jax.random.split(keys[-1], len(self.view_names))
    banks = {name: init_bank(k, self.bank_size, self.out_dim)
             for name, k in zip(self.view_names, bank_keys)}
    return params, {'batch_stats': stats, 'banks': banks}

  # -- training -----------------------------------------------------------------------------------
  def loss(self, params, state, views, rng):
    stats = state.buffers['batch_stats']
    new_stats, feats = {}, []
    for i, name in enumerate(self.view_names):
      h, s = apply_module(self.backbone, self._encoder(params, name), self._encoder(stats, name),
                          views[name], train=True, rngs={'dropout': jax.random.fold_in(rng, i)})
      self._set_encoder(new_stats, name, s)
      feats.append(losses.l2_normalize(self.head.apply({'params': params['heads'][name]}, h)))
    banks, index = state.buffers['banks'], views['index']
    loss, acc = losses.cmc_loss(feats, [banks[n] for n in self.view_names], index,
                                self.temperature, self.graph)
    banks = {n: losses.memory_bank_update(banks[n], index, f, self.bank_momentum)
             for n, f in zip(self.view_names, feats)}
    buffers = dict(state.buffers, batch_stats=new_stats, banks=banks)
    return loss, ({'view_acc': acc}, buffers)

  # -- evaluation ---------------------------------------------------------------------------------
  def features(self, params, buffers, images_uint8):
    """Pooled features of the ``feature_views`` encoders, concatenated (the paper: L and ab)."""
    rgb = images_uint8.astype(jnp.float32) / 255.0
    stats = buffers.get('batch_stats', {})
    out = []
    for name in self.feature_views:
      s = self._encoder(stats, name) if stats else {}
      h, _ = apply_module(self.backbone, self._encoder(params, name), s, VIEWS[name].fn(rgb),
                          train=False)
      out.append(h.astype(jnp.float32))
    return jnp.concatenate(out, axis=-1)

