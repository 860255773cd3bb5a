"""TFDS datasets as random-access sources: ``tfds.data_source`` over ArrayRecord, no TensorFlow.

Prepare a dataset once. ``tfds build`` is the only step that needs TensorFlow, so it runs in an
environment of its own (the training environment stays TensorFlow-free)::

    python3 -m venv ~/.tfds_env && ~/.tfds_env/bin/pip install -q tensorflow-cpu tensorflow-datasets array_record
    ~/.tfds_env/bin/tfds build cifar10 --data_dir=~/tensorflow_datasets --file_format=array_record

then train with ``config.data.source='tfds'``, ``config.data.name='cifar10'``,
``config.data.data_dir`` (empty: TFDS's default, ``$TFDS_DATA_DIR`` or ~/tensorflow_datasets).

Why not ``tfds.split_for_jax_process``: every process opens the *whole* split, and the pipeline
(``pipeline.train_dataset``) shuffles globally and gives each process its slice of every global
batch. A run on P processes therefore sees exactly the global batches of a run on one process
(the same trajectory, whatever the host count), which per-process splits could not give.
"""
from __future__ import annotations

import difflib
import os

import numpy as np

from ssl_jax.data.folder import BadRecordError, decode_image


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("config.data.source='tfds' needs tensorflow_datasets: "
                      'pip install tensorflow-datasets array_record') from e
  return tfds


def _build_command(name: str, builder) -> str:
  root = getattr(builder, '_data_dir_root', None) or os.path.dirname(str(builder.data_dir))
  # `tfds build` needs TensorFlow, which the training environment does not have: a venv of its own.
  cmd = (f'python3 -m venv ~/.tfds_env && ~/.tfds_env/bin/pip install -q tensorflow-cpu '
         f'tensorflow-datasets array_record && ~/.tfds_env/bin/tfds build {name} '
         f'--data_dir={root} --file_format=array_record')
  if getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None):
    cmd += ' --manual_dir=DIR_WITH_THE_DOWNLOADED_FILES  # needs a manual download, see the TFDS ' \
           'catalog page'
  return cmd


def _feature_keys(features, image_key: str, label_key: str):
  """(image key, label key or None) that exist in the dataset's FeaturesDict."""
  keys = list(features.keys()) if hasattr(features, 'keys') else []
  if image_key not in keys:
    raise ValueError(f'config.data.image_key={image_key!r} is not a feature of this dataset; it '
                     f'has {keys}')
  return image_key, (label_key if label_key in keys else None)


def open_data_source(name: str, split: str, data_dir: str = ''):
  """``tfds.data_source(name, split=split, data_dir=data_dir)`` with errors that say what to do."""
  tfds = _tfds()
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    known = tfds.list_builders(with_community_datasets=False)
    close = difflib.get_close_matches(name.split('/')[0].split(':')[0], known, n=3)
    hint = f'; did you mean {close}?' if close else ''
    raise ValueError(f'config.data.name={name!r} is not a TFDS dataset{hint}') from e
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False), builder
  except Exception as e:  # pylint: disable=broad-except
    if not builder.is_prepared():
      raise FileNotFoundError(
          f'TFDS dataset {name!r} is not prepared in {builder.data_dir}. Prepare it once with\n'
          f'    {_build_command(name, builder)}\n'
          '(or set config.data.data_dir to where it is prepared)') from e
    if isinstance(e, NotImplementedError):
      raise RuntimeError(
          f'TFDS dataset {name!r} at {builder.data_dir} is not stored as ArrayRecord (needed for '
          f'random access); rebuild it with\n    {_build_command(name, builder)}') from e
    splits = list(builder.info.splits.keys())
    raise ValueError(f'cannot open split {split!r} of TFDS dataset {name!r} (splits: {splits}): '
                     f'{e}') from e


class TfdsSource:
  """A TFDS split as ``{'image': uint8 (H, W, 3), 'label': int32, 'index': int64}`` records.

  Images arrive decoded (``tfds.features.Image``) or as encoded bytes (e.g. a ``Tensor`` of
  strings, or a builder whose image feature is skipped); both are handled, grey is made RGB.
  """

  def __init__(self, name: str, split: str = 'train', data_dir: str = '',
               image_key: str = 'image', label_key: str = 'label'):
    self.ds, builder = open_data_source(name, split, data_dir)
    features = builder.info.features
    self.image_key, self.label_key = _feature_keys(features, image_key, label_key)
    label = features[self.label_key] if self.label_key else None
    self.num_classes = int(getattr(label, 'num_classes', 0) or 0)
    shape = getattr(features[self.image_key], 'shape', None)
    self.image_shape = tuple(shape) if shape is not None else None  # (H, W, C), None for unknown
    self.name = f'tfds:{name}:{split}'
    if len(self.ds) == 0:
      raise ValueError(f'TFDS dataset {name!r} split {split!r} is empty')

  def __len__(self) -> int:
    return len(self.ds)

  def describe(self, i: int) -> str:
    return f'{self.name}[{i}]'

  def __getitem__(self, i):
    i = int(i)
    try:
      rec = self.ds[i]
      image = rec[self.image_key]
      if isinstance(image, (bytes, np.bytes_)) or (isinstance(image, np.ndarray)
                                                   and image.dtype.kind in 'SO'):
        image = decode_image(bytes(image.item() if isinstance(image, np.ndarray) else image))
      image = np.asarray(image)
      if image.ndim == 2:
        image = image[..., None]
      if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
      elif image.shape[-1] == 4:
        image = image[..., :3]
      if image.dtype != np.uint8:
        raise TypeError(f'image dtype {image.dtype} (expected uint8)')
      label = int(rec[self.label_key]) if self.label_key else -1
    except Exception as e:  # pylint: disable=broad-except
      raise BadRecordError(self.describe(i), e) from e
    return {'image': np.ascontiguousarray(image), 'label': np.int32(label), 'index': np.int64(i)}

  def __repr__(self):
    return f'TfdsSource({self.name}, n={len(self)}, classes={self.num_classes})'
