"""The Method interface: the one seam every self-supervised method plugs into.

A method owns its flax modules and pure functions; the trainer calls only these:

* ``modality``, ``host_transform()``    -> what the input pipeline delivers ('image': the crops
                                            of ``crop_specs()``; 'audio': waveform clips);
* ``init(rng, batch)``                   -> (params, buffers): trainable params and method state
                                            (BatchNorm stats, teacher params, queues, centers);
* ``views(batch, rng)``                  -> on-device augmentation / masking (jittable);
* ``loss(params, state, views, rng)``    -> (loss, (metrics, new_buffers)), pure;
* ``after_update(state)``                -> state (EMA teacher, queue enqueue, center update);
* ``features(params, buffers, images)``  -> (B, D) frozen-encoder features for eval and export.

The trainer never branches on the method's name.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from ssl_jax import models
from ssl_jax.data import augment, image_ops, masking
from ssl_jax.data import audio as audio_lib
from ssl_jax.data import modality as data_modality
from ssl_jax.data.pipeline import CropSpec, MultiCrop
from ssl_jax.methods import hparams
from ssl_jax import optim as schedules


def apply_module(module, params, stats, x, *, train: bool, rngs=None, **kw):
  """Applies a flax module, threading BatchNorm statistics when the module has any.

  Returns (output, new_stats); in eval mode (or for modules without BatchNorm) the stats are
  returned unchanged.
  """
  variables = {'params': params}
  if stats:
    variables['batch_stats'] = stats
  if train and stats:
    out, updates = module.apply(variables, x, train=True, mutable=['batch_stats'], rngs=rngs, **kw)
    return out, updates['batch_stats']
  return module.apply(variables, x, train=train, rngs=rngs, **kw), stats


def init_module(module, rng, x, **kw):
  """Initialises a flax module in eval mode; returns (params, batch_stats or {})."""
  variables = module.init({'params': rng, 'dropout': rng}, x, train=False, **kw)
  return variables['params'], variables.get('batch_stats', {})


class Method:
  """Base class with the shared pieces: the backbone, view crops, augmentation, features."""

  #: What the method reads (``config.data.modality`` must agree; ``data/modality.py``).
  modality = 'image'
  #: Default host crops: two views of ``data.image_size``.
  num_views = 2
  #: False: the recipes' normalisation is dropped, so ``views`` gets [0, 1] crops and the method
  #: normalises after its own ops (Lab conversion, corruption, pasting).
  normalize_views = True
  #: The ``config.method`` fields this method reads (see ``methods/hparams.py``); subclasses
  #: extend it. Parsed into ``self.hp`` first thing, so a bad field stops before any other work.
  Hparams = hparams.Hparams
  #: True: ``features`` is the backbone's pooled output on ``normalize(images)``, so the exported
  #: encoder reproduces it. False for methods whose eval feature is more than that one backbone
  #: (CMC: several encoders; CPC: a grid of patch encodings; the VQ tokenizer: codes).
  features_from_encoder = True
  #: False for methods that train no image encoder (the VQ tokenizer BEiT reads): evaluation
  #: skips fine-tuning and export refuses, each with the reason.
  has_encoder = True

  def __init__(self, config):
    self.config = config
    self.hp = hparams.parse(type(self).Hparams, config.method,
                            config.method.get('name', type(self).__name__))
    self.backbone = models.build_backbone(config.model)
    self.feature_dim = models.feature_dim(self.backbone, config.model)

  # -- data -------------------------------------------------------------------------------------
  def host_transform(self):
    """The pipeline's per-record transform (a grain RandomMap with ``batch_spec(batch)``): for
    images, the random-resized crops of :meth:`crop_specs`."""
    return MultiCrop(self.crop_specs())

  def crop_specs(self) -> tuple[CropSpec, ...]:
    d = self.config.data
    return tuple(CropSpec(f'view{i}', d.image_size, tuple(d.crop_scale), flip=d.flip)
                 for i in range(self.num_views))

  def view_recipes(self) -> tuple[Any, ...]:
    """Augmentation recipe for each view (``config.aug.recipe`` may be one name or one per view)."""
    recipe = self.config.aug.recipe
    names = [recipe] * self.num_views if isinstance(recipe, str) else list(recipe)
    overrides = dict(self.config.aug.get('overrides', {}))
    if not self.normalize_views:
      overrides.update(mean=None, std=None)
    return tuple(augment.get_recipe(n, **overrides) for n in names)

  def views(self, batch, rng):
    """Colour-augments each host crop with its recipe and per-example keys."""
    keys = jax.random.split(rng, self.num_views)
    return {f'view{i}': augment.augment_batch(keys[i], batch[f'view{i}'], recipe)
            for i, recipe in enumerate(self.view_recipes())}

  # -- training -----------------------------------------------------------------------------------
  def init(self, rng, batch):
    raise NotImplementedError

  def loss(self, params, state, views, rng):
    raise NotImplementedError

  def after_update(self, state):
    return state

  def build_optimizer(self, total_steps: int):
    """(optax transformation, lr schedule). Override to freeze or re-label parameters."""
    return schedules.build_optimizer(self.config.optim, self.config.data.batch_size, total_steps)

  # -- evaluation / export ------------------------------------------------------------------------
  def encoder_input(self) -> dict:
    """What the encoder sees of a [0, 1] RGB image, as ``data.image_ops.encoder_input`` kwargs:
    ``color`` ('rgb', 'gray', 'cie_l') and the per-channel ``mean`` / ``std`` (None: none).
    :meth:`normalize` applies it, and export writes it into ``encoder.json`` (the exported
    encoder's preprocessing). Default: RGB with the first view's recipe's mean / std (the
    configured ``aug.overrides`` included), ImageNet's when the method normalises its own views."""
    recipe = self.view_recipes()[0] if self.normalize_views else augment.get_recipe('none')
    return {'color': 'rgb', 'mean': recipe.get('mean'), 'std': recipe.get('std')}

  def normalize(self, images_uint8):
    """Eval-time preprocessing: uint8 in [0, 255] (or float in [0, 1]) -> the encoder's float
    input (:meth:`encoder_input`)."""
    x = jnp.asarray(images_uint8)
    x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
    return image_ops.encoder_input(x, **self.encoder_input())

  def features(self, params, buffers, images_uint8):
    """Pooled backbone features (B, D) of the frozen encoder, eval mode."""
    x = self.normalize(images_uint8)
    out, _ = apply_module(self.backbone, params['backbone'],
                          buffers.get('batch_stats', {}).get('backbone', {}), x, train=False)
    return out.astype(jnp.float32)

  def encoder_variables(self, params, buffers):
    """The backbone's flax variables alone, for encoder-only export."""
    v = {'params': params['backbone']}
    stats = buffers.get('batch_stats', {}).get('backbone', {})
    if stats:
      v['batch_stats'] = stats
    return v


class AudioMethod(Method):
  """Base of the speech methods (wav2vec 2.0, HuBERT, data2vec-audio): one view, the raw
  waveform clip of ``data.clip_samples`` samples (``data/audio.py``), standardised per clip on
  device when ``model.audio_normalize`` (fairseq ``normalize``); masking is the method's.

  ``features`` is the backbone's mean-pooled final frames of the standardised clip; the backbone
  is one of the audio encoders of ``models/audio.py`` (``model.backbone='audio_tiny'``,
  ``'wav2vec2_base'``...)."""

  modality = 'audio'
  num_views = 1
  normalize_views = False

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams):
    # wav2vec 2.0 / HuBERT span masks (data.masking.span_mask): a frame starts a span of
    # mask_span frames with probability mask_prob / mask_span; equal counts per clip.
    mask_prob: float
    mask_span: int
    min_masks: int = 2

  def __init__(self, config):
    super().__init__(config)
    if not hasattr(self.backbone, 'num_frames'):
      raise ValueError(f'config.model.backbone={config.model.backbone!r} is not an audio '
                       f'encoder; {type(self).__name__} needs one of '
                       f'{list(models.AUDIOS)}')
    self.audio_normalize = bool(config.model.get('audio_normalize', True))
    self.num_frames = int(self.backbone.num_frames(config.data.clip_samples))
    m = self.hp
    if not 0 < m.mask_prob < 1:
      raise ValueError(f'config.method.mask_prob={m.mask_prob} must be in (0, 1)')
    if not 0 < m.mask_span < self.num_frames:
      raise ValueError(f'config.method.mask_span={m.mask_span} must be in [1, {self.num_frames}) '
                       f'(frames of a data.clip_samples={config.data.clip_samples} clip)')

  def host_transform(self):
    return data_modality.audio_transform(self.config.data)

  def crop_specs(self):
    return ()

  def views(self, batch, rng):
    """The standardised clip and its span mask (B, T) (True = masked)."""
    m = self.hp
    return {'audio': self.normalize(batch['audio']),
            'mask': masking.span_mask(rng, batch['audio'].shape[0], self.num_frames,
                                      m.mask_prob, m.mask_span, min_masks=m.min_masks)}

  def encoder_input(self) -> dict:
    return {'modality': 'audio', 'sample_rate': 16000, 'clip_samples':
            int(self.config.data.clip_samples), 'normalize': self.audio_normalize}

  def normalize(self, audio):
    x = jnp.asarray(audio, jnp.float32)
    return audio_lib.standardize(x) if self.audio_normalize else x
