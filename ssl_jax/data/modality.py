"""What ``config.data.modality`` means for the host side: the training host transform of a
modality's default view and the array the frozen encoder sees of one record at evaluation.

* ``'image'``: records ``{'image': uint8 (H, W, 3)}``; random-resized crops for training (the
  method's ``crop_specs``, ``pipeline.MultiCrop``), centre crops of ``data.image_size`` for eval.
* ``'audio'``: records ``{'audio': float32 (L,)}``; clips of ``data.clip_samples`` samples
  (``audio.AudioClip``: random windows for training, the centre window for eval).

Every record also carries ``'label'`` (int32, -1 when unlabelled) and ``'index'`` (int64).
"""
from __future__ import annotations

from ssl_jax.data import audio

MODALITIES = ('image', 'audio')


def check(modality: str, field: str = 'data.modality'):
  if modality not in MODALITIES:
    raise ValueError(f'config.{field}={modality!r} is not a supported modality; choose one of '
                     f'{list(MODALITIES)}')


def audio_transform(data_cfg) -> audio.AudioClip:
  return audio.AudioClip(data_cfg.get('clip_samples', 16000))


def eval_view(data_cfg):
  """record -> the encoder's eval input for ``data_cfg.modality``; None for images (the eval
  pipeline's own centre crop at ``data.image_size`` / ``data.eval_crop_frac``)."""
  modality = data_cfg.get('modality', 'image')
  check(modality)
  if modality == 'audio':
    return audio_transform(data_cfg).eval_view
  return None
