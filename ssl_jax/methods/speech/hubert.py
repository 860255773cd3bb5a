r"""HuBERT (Hsu et al., "HuBERT: Self-Supervised Speech Representation Learning by Masked
Prediction of Hidden Units", IEEE/ACM TASLP 2021).

The wav2vec 2.0 encoder reads the waveform with spans of its 20 ms frames masked (the projected
conv features replaced by a learned embedding); at every masked frame t it predicts the frame's
hidden unit :math:`z_t`, the nearest of K k-means centroids of the *unmasked* frame's MFCCs
(iteration 1, K = 100) or of a layer of the previous iteration's frozen encoder (iteration 2,
K = 500 from layer 6 of BASE):

.. math:: p_f(c \mid \tilde X, t) = \frac{\exp(\cos(A o_t, e_c) / \tau)}
                                         {\sum_{c'=1}^{K} \exp(\cos(A o_t, e_{c'}) / \tau)},
          \qquad \mathcal{L} = -\frac{1}{|M|} \sum_{t \in M} \log p_f(z_t \mid \tilde X, t)
                               + \lambda \overline{f^2}

with :math:`o_t` the transformer output, A ``final_proj`` (to ``final_dim`` = 256), :math:`e_c`
the unit embeddings (``label_embs``), :math:`\tau` = 0.1 (``losses.hubert_logits`` /
``losses.hubert_loss``: the paper's alpha = 1, masked frames only) and fairseq's feature penalty,
lambda = 10 (``losses.feature_l2_penalty`` of the conv encoder's output).

Stated choices, from fairseq ``models/hubert/hubert.py``, ``criterions/hubert_criterion.py`` and
``examples/hubert/config/pretrain/hubert_base_librispeech.yaml``:

* units are computed on device, not read from label files: the units file
  (``hubert_units.py``: centroids, and for iteration 2 the frozen encoder's parameters) becomes
  the buffers ``buffers['units']`` (``centroids`` and, for 'layer', ``encoder``), part of the
  checkpoint and never updated; ``views`` keeps the raw clip (``audio_raw``) and ``loss`` labels
  it from ``state.buffers`` (``views`` sees no state) under stop-gradient: MFCCs of the raw
  waveform (``data.speech.mfcc_jax``; fairseq's ``dump_mfcc_feature`` reads the raw wav) or the
  frozen encoder's block output on its own input normalisation, then the nearest centroid (first
  on ties, as ``data.kmeans.assign``);
* iteration 1 without a units file: the method fits the MFCC k-means itself on the training
  split (``hubert_units.cached_mfcc_centroids``: up to ``kmeans_max_clips`` records, seed
  ``config.seed``) and caches it, so a second run or an eval reader loads it;
* MFCC frames are 20 ms (``data/speech.py``: the conv encoder's frames), not fairseq's 10 ms at a
  label rate of 100 Hz subsampled to the 50 Hz features; their count must equal the encoder's;
* unit embeddings (K, ``final_dim``) and the mask embedding are ``uniform_`` [0, 1) initialised as
  fairseq's ``label_embs_concat`` and ``mask_emb``; K rows, not fairseq's dictionary of K + 4
  (its 4 special symbols are never targets);
* masks: span masking (``data.masking.span_mask``), probability 0.8, span 10, equal counts per
  utterance; the masked prediction weight 1, unmasked 0 (``pred_masked_weight``,
  ``pred_nomask_weight``);
* ``model.feature_grad_mult`` 0.1 and the waveform normalisation (``model.audio_normalize``: off
  for BASE) are backbone fields, as wav2vec 2.0's.

Evaluation / export use the encoder; ``features`` mean-pools its final frames.
Metrics: ``loss_masked``, ``correct_masked`` (unit accuracy at masked frames), ``feature_pen``,
``mask_ratio``, ``label_entropy`` (nats, of the batch's units) and ``label_usage`` (fraction of
the K units present in the batch).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.data import audio as audio_lib
from ssl_jax.data import speech
from ssl_jax.methods.base import AudioMethod, init_module
from ssl_jax.methods.speech import hubert_units
from ssl_jax.models.cpu.dense import Dense

UNITS = ('mfcc', 'layer')
_MFCC_DIM = 39


def nearest_centroid(features, centroids):
  """(..., D) -> (...) int32 index of the nearest centroid (squared Euclidean, first on ties;
  ``data.kmeans.assign``'s rule). Dots at HIGHEST precision: an accelerator's reduced-precision
  float32 matmul would move frames across cluster borders."""
  c = centroids.astype(jnp.float32)
  dots = jnp.einsum('...d,kd->...k', features.astype(jnp.float32), c,
                    precision=jax.lax.Precision.HIGHEST)
  return jnp.argmin(jnp.sum(c * c, axis=-1) - 2.0 * dots, axis=-1).astype(jnp.int32)


def label_stats(labels, num_units: int):
  """(entropy in nats of the units' empirical distribution, fraction of the K units used)."""
  counts = jnp.zeros((num_units,), jnp.float32).at[labels.reshape(-1)].add(1.0)
  p = counts / jnp.maximum(jnp.sum(counts), 1.0)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return entropy, jnp.mean((counts > 0).astype(jnp.float32))


class HuBERT(AudioMethod):
  """HuBERT: masked prediction of k-means units (MFCC, or a frozen encoder's layer)."""

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(AudioMethod.Hparams):
    units: str                      # 'mfcc' (iteration 1) | 'layer' (iteration 2+)
    num_units: int                  # K
    units_path: str = ''            # a hubert_units file; '' = fit MFCC units here ('mfcc' only)
    kmeans_max_clips: int = 4000    # training records the k-means reads (0: all)
    kmeans_iters: int = 100
    kmeans_batch_size: int = 0      # 0: full-batch Lloyd; N: mini-batches of N frames
    final_dim: int
    logit_temp: float = 0.1
    masked_weight: float = 1.0
    unmasked_weight: float = 0.0
    feature_pen_weight: float = 10.0

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    if m.units not in UNITS:
      raise ValueError(f'config.method.units={m.units!r} must be one of {UNITS}')
    if m.num_units < 2:
      raise ValueError(f'config.method.num_units={m.num_units} must be at least 2')
    if m.units == 'layer' and not m.units_path:
      raise ValueError(
          "config.method.units_path is empty: units='layer' (HuBERT's iteration 2) reads a units "
          'file; make it from the previous run with python -m ssl_jax.eval.hubert_units '
          '--config=... --units=layer --workdir=PREVIOUS_RUN --layer=N --num_units=K '
          '--out=UNITS.npz, then pass --config.method.units_path=UNITS.npz')
    mfcc_frames = speech.num_frames(config.data.clip_samples)
    if m.units == 'mfcc' and mfcc_frames != self.num_frames:
      raise ValueError(f'{mfcc_frames} MFCC frames but {self.num_frames} encoder frames for a '
                       f'data.clip_samples={config.data.clip_samples} clip: the encoder must '
                       'keep the 20 ms / 25 ms frame geometry of wav2vec 2.0')
    self.final_proj = Dense(m.final_dim, name='final_proj')
    self.units_encoder, self.units_layer, self.units_normalize = None, 0, False
    self._units = None
    if m.units_path:
      try:
        spec = hubert_units.load_units(m.units_path, arrays=False)   # shapes only
      except FileNotFoundError:
        raise ValueError(f'config.method.units_path={m.units_path!r} does not exist (a file of '
                         'python -m ssl_jax.eval.hubert_units)') from None
      self._check_units_file(spec)
    else:
      spec = {'centroids': hubert_units.cached_mfcc_centroids(config, m.num_units, config.seed)}
      self._units = {'centroids': spec['centroids']}
    if m.units == 'layer':
      self.units_layer = int(spec['layer'])
      self.units_normalize = bool(spec['audio_normalize'])
      self.units_encoder = hubert_units.frozen_encoder(spec['model_config'], self.units_layer)
      frames = self.units_encoder.num_frames(config.data.clip_samples)
      if frames != self.num_frames:
        raise ValueError(f'the units encoder of {m.units_path} makes {frames} frames of a '
                         f'data.clip_samples={config.data.clip_samples} clip, this encoder '
                         f'{self.num_frames}')
    self.units_spec = spec

  def _check_units_file(self, spec):
    m = self.hp
    path = m.units_path
    if spec['source'] != m.units:
      raise ValueError(f"config.method.units={m.units!r} but {path} holds {spec['source']!r} "
                       'units')
    k, dim = spec['centroids'].shape
    if k != m.num_units:
      raise ValueError(f'config.method.num_units={m.num_units} but {path} holds {k} units')
    if m.units == 'mfcc' and dim != _MFCC_DIM:
      raise ValueError(f'{path}: MFCC centroids must be {_MFCC_DIM}-d, got {dim}')

  def units_buffers(self) -> dict:
    """``buffers['units']``: the centroids (and the frozen encoder's parameters, cut after its
    layer), read from the units file once."""
    if self._units is None:
      u = hubert_units.load_units(self.hp.units_path)
      self._units = {'centroids': u['centroids']}
      if self.hp.units == 'layer':
        self._units['encoder'] = hubert_units.truncate_params(u['encoder'], self.units_layer)
    return jax.tree_util.tree_map(jnp.asarray, self._units)

  # -- views and targets ------------------------------------------------------------------------
  def views(self, batch, rng):
    out = super().views(batch, rng)   # the standardised clip and the span mask
    out['audio_raw'] = jnp.asarray(batch['audio'], jnp.float32)   # the units read the raw clip
    return out

  def unit_features(self, units, audio_raw):
    """(B, T, D) the frames the units cluster: MFCC + deltas of the raw clips, or the frozen
    encoder's block output on its own normalisation of them."""
    if self.hp.units == 'mfcc':
      return speech.mfcc_jax(audio_raw)
    x = audio_lib.standardize(audio_raw) if self.units_normalize else audio_raw
    out = self.units_encoder.apply({'params': units['encoder']}, x, train=False,
                                   method=type(self.units_encoder).encode)
    return out['layers'][self.units_layer - 1]

  def frame_labels(self, units, audio_raw):
    """(B, T) int32 unit of every frame of the raw clips (no gradient)."""
    units = jax.lax.stop_gradient(units)
    return nearest_centroid(self.unit_features(units, audio_raw), units['centroids'])

  # -- training -----------------------------------------------------------------------------------
  def init(self, rng, batch):
    k1, k2, k3, k4 = jax.random.split(rng, 4)
    x = jnp.zeros((2,) + batch['audio'].shape[1:], jnp.float32)
    bb_params, _ = init_module(self.backbone, k1, x)
    d, m = self.feature_dim, self.hp
    params = {'backbone': bb_params,
              'final_proj': self.final_proj.init(k2, jnp.zeros((2, d)))['params'],
              'mask_emb': jax.random.uniform(k3, (d,)),                      # fairseq uniform_()
              'label_embs': jax.random.uniform(k4, (m.num_units, m.final_dim))}   # uniform_()
    return params, {'units': self.units_buffers()}

  def loss(self, params, state, views, rng):
    m = self.hp
    x, mask = views['audio'], views['mask']
    labels = self.frame_labels(state.buffers['units'], views['audio_raw'])
    enc = self.backbone.apply({'params': params['backbone']}, x, train=True, mask=mask,
                              mask_token=params['mask_emb'], method=type(self.backbone).encode,
                              rngs={'dropout': rng})
    proj = self.final_proj.apply({'params': params['final_proj']}, enc['frames'])
    logits = losses.hubert_logits(proj, params['label_embs'], m.logit_temp)
    pred, aux = losses.hubert_loss(logits, labels, mask, m.unmasked_weight, m.masked_weight)
    feature_pen = losses.feature_l2_penalty(enc['conv'])
    entropy, usage = label_stats(labels, m.num_units)
    metrics = {'loss_masked': aux['loss_masked'], 'correct_masked': aux['correct_masked'],
               'feature_pen': feature_pen, 'mask_ratio': jnp.mean(mask.astype(jnp.float32)),
               'label_entropy': entropy, 'label_usage': usage}
    return pred + m.feature_pen_weight * feature_pen, (metrics, state.buffers)
