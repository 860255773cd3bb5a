"""The audio modality's host transform: a waveform record -> one fixed-length training clip.

Records of an audio source are ``{'audio': float32 (L,), 'label': int32, 'index': int64}``
(``data/speech.py``). Speech SSL methods (wav2vec 2.0, HuBERT, data2vec-audio) take one view of
the raw waveform and do their masking on device, so the host only cuts a fixed-length clip:

* training: a random window of ``clip_samples`` (uniform start) when the waveform is longer,
  zero padding at the end when it is shorter (fairseq crops randomly to ``max_sample_size`` too;
  it pads or batches by length where we keep one static shape);
* evaluation: the centre window, or the padded waveform;
* ``normalize``: zero mean, unit variance per clip (fairseq's ``normalize=True`` of the
  wav2vec 2.0 large / data2vec-audio configs), done on device by the method, not here, so
  an exported encoder's input is the raw waveform.

A batch is ``{'audio': float32 (B, clip_samples), 'label': int32 (B,), 'index': int64 (B,)}``.
"""
from __future__ import annotations

import grain
import numpy as np

from ssl_jax.data.pipeline import INDEX_DTYPE, LABEL_DTYPE


def fit_length(wave: np.ndarray, length: int, start: int = 0) -> np.ndarray:
  """``wave[start:start + length]``, zero-padded at the end to ``length`` samples (float32)."""
  out = np.zeros(length, np.float32)
  piece = np.asarray(wave, np.float32)[start:start + length]
  out[:len(piece)] = piece
  return out


class AudioClip(grain.transforms.RandomMap):
  """Record -> {'audio': float32 (clip_samples,), 'label', 'index'}: a random window (training),
  the centre window (``eval_view``)."""

  def __init__(self, clip_samples: int):
    if clip_samples <= 0:
      raise ValueError(f'config.data.clip_samples={clip_samples} must be positive (samples per '
                       'training clip, e.g. 16000 for 1 s at 16 kHz)')
    self.clip_samples = int(clip_samples)

  def random_map(self, record, rng: np.random.Generator):
    wave = np.asarray(record['audio'])
    if wave.ndim != 1:
      raise ValueError(f"an audio record's 'audio' must be a 1-D waveform, got shape {wave.shape}")
    extra = len(wave) - self.clip_samples
    start = int(rng.integers(0, extra + 1)) if extra > 0 else 0
    return {'audio': fit_length(wave, self.clip_samples, start),
            'label': record['label'], 'index': record['index']}

  def batch_spec(self, batch: int) -> dict:
    return {'audio': ((batch, self.clip_samples), np.float32),
            'label': ((batch,), LABEL_DTYPE), 'index': ((batch,), INDEX_DTYPE)}

  def eval_view(self, record) -> np.ndarray:
    wave = np.asarray(record['audio'])
    return fit_length(wave, self.clip_samples, max(0, (len(wave) - self.clip_samples) // 2))


def standardize(audio, eps: float = 1e-5):
  """Per-clip zero mean, unit variance of (B, L) waveforms (fairseq ``normalize=True``: layer norm
  over the samples without affine parameters). Works on numpy and jax arrays."""
  mu = audio.mean(axis=-1, keepdims=True)
  var = ((audio - mu) ** 2).mean(axis=-1, keepdims=True)
  return (audio - mu) / (var + eps) ** 0.5
