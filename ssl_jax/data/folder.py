"""A folder of image files as a random-access source (Pillow decoding, no TensorFlow).

Layouts (``config.data.source = 'folder'``, ``config.data.path = ROOT``)::

    ROOT/train/<class>/*.jpg   labelled, one sub-folder per class (class index = sorted name order)
    ROOT/val/<class>/*.jpg     optional evaluation split ('val', 'validation' or 'test')
    ROOT/<class>/*.jpg         no split folders: ROOT itself is the 'train' split
    ROOT/*.jpg                 flat folder: unlabelled (label -1, num_classes 0)

Any of ``.jpg .jpeg .png .bmp .gif .webp .tif .tiff .ppm .pgm``; hidden files are ignored. Decoding
applies the EXIF orientation and converts grey, grey+alpha, RGBA, palette and CMYK images to RGB.
A file that cannot be decoded raises ``BadRecordError`` (naming the file); ``sources.RobustSource``
turns that into a warning and a deterministic replacement.
"""
from __future__ import annotations

import functools
import io
import os
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

from ssl_jax import paths

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm',
                    '.pgm')
SPLIT_DIRS = {'train': ('train',), 'val': ('val', 'validation'), 'validation': ('validation', 'val'),
              'test': ('test', 'val', 'validation')}


class BadRecordError(RuntimeError):
  """A record (file) that cannot be read or decoded; ``where`` names it."""

  def __init__(self, where: str, cause: BaseException | str):
    super().__init__(f'{where}: {cause}')
    self.where = where


def to_rgb(img: Image.Image) -> Image.Image:
  """RGB version of any Pillow image (L, LA, RGBA, P with or without transparency, CMYK, I;16)."""
  if img.mode == 'RGB':
    return img
  if img.mode == 'P' and 'transparency' in img.info:
    img = img.convert('RGBA')
  if img.mode in ('I;16', 'I;16B', 'I;16L', 'I'):  # 16/32-bit grey: scale to 8 bits.
    a = np.asarray(img, np.float64)
    top = 65535.0 if a.max() > 255 else 255.0
    img = Image.fromarray(np.clip(a * (255.0 / top), 0, 255).astype(np.uint8), 'L')
  return img.convert('RGB')


def decode_image(data_or_path, min_side: int = 0) -> np.ndarray:
  """uint8 (H, W, 3) RGB from encoded bytes or a file path.

  ``min_side > 0`` lets the JPEG decoder downscale by 1/2, 1/4 or 1/8 while keeping both sides
  >= ``min_side`` (Pillow ``draft``), a large saving for photos much bigger than the crops.
  """
  src = io.BytesIO(data_or_path) if isinstance(data_or_path, (bytes, bytearray)) else data_or_path
  if isinstance(src, str) and paths.is_remote(src):   # gs://...: one read, decoded from memory
    src = io.BytesIO(paths.as_path(src).read_bytes())
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # palette-transparency and EXIF chatter from Pillow
    with Image.open(src) as img:
      if min_side and img.format == 'JPEG':
        img.draft('RGB', (min_side, min_side))
      img = ImageOps.exif_transpose(img)
      return np.asarray(to_rgb(img), np.uint8)


def _is_image(name: str, extensions=IMAGE_EXTENSIONS) -> bool:
  return not name.startswith('.') and name.lower().endswith(extensions)


def _images_under(directory: str, extensions=IMAGE_EXTENSIONS) -> list[str]:
  """All files with ``extensions`` below ``directory`` (recursive; local or a URL), sorted."""
  out = []
  for dirpath, dirnames, filenames in paths.walk(directory):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    out.extend(os.path.join(dirpath, f) for f in sorted(filenames)
               if _is_image(f, extensions))
  return out


def split_directory(root: str, split: str) -> str:
  """The folder holding ``split`` below ``root``; raises FileNotFoundError naming what is missing."""
  if not paths.as_path(root).is_dir():
    what = 'is not a directory' if paths.as_path(root).exists() else 'does not exist'
    raise FileNotFoundError(f'config.data.path={root!r} {what}')
  for name in SPLIT_DIRS.get(split, (split,)):
    candidate = os.path.join(root, name)
    if paths.as_path(candidate).is_dir():
      return candidate
  has_splits = any(paths.as_path(os.path.join(root, n)).is_dir()
                   for n in ('train', 'val', 'validation', 'test'))
  if split == 'train' and not has_splits:
    return root
  raise FileNotFoundError(
      f'config.data.path={root!r} has no folder for split {split!r} (looked for '
      f'{list(SPLIT_DIRS.get(split, (split,)))}); create it, or point config.data.eval_split / '
      'eval_train_split at an existing split, or set config.train.final_eval=False and '
      'config.train.knn_every=0 to train without evaluation')


@functools.lru_cache(maxsize=16)
def list_folder(root: str, split: str, extensions=IMAGE_EXTENSIONS):
  """(paths, labels int32, class names) of ``split``'s files with ``extensions``; cached, so eval
  re-reads no directory."""
  directory = split_directory(root, split)
  _, dirnames, filenames = next(paths.walk(directory), (directory, [], []))  # local or gs://
  class_dirs = sorted(d for d in dirnames if not d.startswith('.'))
  class_files = {c: _images_under(os.path.join(directory, c), extensions) for c in class_dirs}
  classes = [c for c in class_dirs if class_files[c]]
  if classes:
    loose = sorted(f for f in filenames if _is_image(f, extensions))
    if loose:
      warnings.warn(f'{directory}: {len(loose)} file(s) next to the class folders are ignored '
                    f'(e.g. {loose[0]!r}); move them into a class folder')
    files = [p for c in classes for p in class_files[c]]
    labels = np.concatenate([np.full(len(class_files[c]), i, np.int32)
                             for i, c in enumerate(classes)])
  else:
    files = [os.path.join(directory, f) for f in sorted(filenames) if _is_image(f, extensions)]
    labels = np.full(len(files), -1, np.int32)
  if not files:
    kind = 'image' if extensions == IMAGE_EXTENSIONS else 'audio'
    raise FileNotFoundError(f'no {kind} files ({", ".join(extensions)}) in {directory!r} '
                            f'(config.data.path={root!r}, split {split!r})')
  return tuple(files), labels, tuple(classes)


class FolderSource:
  """Random access over the image files of one split of a folder (see the module docstring).

  ``source[i]`` decodes file i and returns ``{'image': uint8 (H, W, 3), 'label', 'index'}``; it
  raises ``BadRecordError`` for an unreadable file. Picklable (grain worker processes).
  """

  def __init__(self, root: str, split: str = 'train', min_side: int = 0):
    self.root = str(paths.as_path(root))   # gs://... stays a URL
    self.split = split
    self.paths, self.labels, self.classes = list_folder(self.root, split)
    self.num_classes = len(self.classes)
    self.min_side = int(min_side)
    self.name = f'folder:{self.root}:{split}'

  def __len__(self) -> int:
    return len(self.paths)

  def describe(self, i: int) -> str:
    return self.paths[i]

  def __getitem__(self, i):
    i = int(i)
    try:
      image = decode_image(self.paths[i], self.min_side)
    except Exception as e:  # pylint: disable=broad-except  # any decoder failure is a bad record
      raise BadRecordError(self.paths[i], e) from e
    return {'image': image, 'label': self.labels[i], 'index': np.int64(i)}

  def __repr__(self):
    return f'FolderSource({self.root!r}, split={self.split!r}, n={len(self)}, ' \
           f'classes={self.num_classes})'


class FolderStats(NamedTuple):
  """What the ``folder`` recipes (configs/_folder.py) read from a folder: image count, classes
  (0: unlabelled), the median shorter side in pixels, and whether the images have colour."""
  num_images: int
  num_classes: int
  side: int
  colour: bool


def folder_stats(root: str, split: str = 'train', sample: int = 32, seed: int = 0) -> FolderStats:
  """FolderStats of ``split`` from its listing and ``sample`` decoded images (a fixed random
  subset): an image is grey when its channels differ by at most 8 levels everywhere."""
  files, _, classes = list_folder(str(paths.as_path(root)), split)
  pick = np.random.default_rng(seed).permutation(len(files))[:sample]
  sides, colour = [], False
  for i in pick:
    try:
      img = decode_image(files[int(i)])
    except Exception:  # pylint: disable=broad-except  # the run's RobustSource reports bad files
      continue
    sides.append(min(img.shape[:2]))
    a = img.astype(np.int16)
    colour = colour or bool(np.abs(a - a[..., :1]).max() > 8)
  if not sides:
    raise FileNotFoundError(f'none of {len(pick)} sampled images of {root!r} could be decoded')
  return FolderStats(len(files), len(classes), int(np.median(sides)), colour)


AUDIO_EXTENSIONS = ('.wav',)


def decode_wav(path: str, sample_rate: int = 16000) -> np.ndarray:
  """A .wav file (PCM 8/16/24/32-bit, any channel count, any rate) -> float32 mono waveform in
  [-1, 1] at ``sample_rate`` (channels averaged; other rates resampled polyphase)."""
  import wave  # pylint: disable=g-import-not-at-top
  with paths.as_path(path).open('rb') as f, wave.open(f, 'rb') as w:
    channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
    raw = w.readframes(w.getnframes())
  if width == 1:
    x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
  elif width == 3:
    b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
    v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
  elif width in (2, 4):
    dt = np.int16 if width == 2 else np.int32
    x = np.frombuffer(raw, dt).astype(np.float32) / float(np.iinfo(dt).max + 1)
  else:
    raise ValueError(f'{width * 8}-bit samples are not supported')
  x = x.reshape(-1, channels).mean(axis=1)
  if rate != sample_rate:
    from scipy import signal  # pylint: disable=g-import-not-at-top
    g = np.gcd(int(rate), int(sample_rate))
    x = signal.resample_poly(x, sample_rate // g, rate // g).astype(np.float32)
  return np.ascontiguousarray(x, np.float32)


class AudioFolderSource(FolderSource):
  """Random access over the .wav files of one split of a folder (the layouts of the module
  docstring, ``.wav`` instead of images): ``{'audio': float32 (L,), 'label', 'index'}`` at
  ``sample_rate``. Convert other formats first, e.g. LibriSpeech's FLAC:
  ``ffmpeg -i in.flac -ar 16000 -ac 1 out.wav``."""

  def __init__(self, root: str, split: str = 'train', sample_rate: int = 16000):
    self.root = str(paths.as_path(root))
    self.split = split
    self.paths, self.labels, self.classes = list_folder(self.root, split, AUDIO_EXTENSIONS)
    self.num_classes = len(self.classes)
    self.sample_rate = int(sample_rate)
    self.min_side = 0
    self.name = f'audio_folder:{self.root}:{split}'

  def __getitem__(self, i):
    i = int(i)
    try:
      wave = decode_wav(self.paths[i], self.sample_rate)
    except Exception as e:  # pylint: disable=broad-except  # any decoder failure is a bad record
      raise BadRecordError(self.paths[i], e) from e
    return {'audio': wave, 'label': self.labels[i], 'index': np.int64(i)}
