"""Host input pipeline on grain: shuffle, crop, batch, shard per JAX process.

The training stream is a grain ``MapDataset`` (random access, so every batch is a pure function of
(seed, step)):

    source -> shuffle(seed) -> repeat -> random_map(crops) -> batch(per-process batch)
           -> [process_index::process_count]

Shuffling and cropping are global (identical on every process) and each process takes its own
slice of every *global* batch, so a run on P processes sees exactly the same global batches as a
run on one process. The iterator's position is a small JSON state that goes into the checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import grain
import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class CropSpec:
  """One random-resized-crop view that the host produces per image.

  Attributes:
    name: key of the view in the batch dict ('view0', 'global1', 'local3', ...).
    size: output side in pixels.
    scale: range of the crop area as a fraction of the image area (torchvision RandomResizedCrop).
    ratio: range of the crop aspect ratio (sampled log-uniformly).
    flip: probability of a horizontal flip.
  """
  name: str
  size: int
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip: float = 0.5


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int,
                            scale: Sequence[float], ratio: Sequence[float]):
  """Crop box (x0, y0, x1, y1) with torchvision's RandomResizedCrop.get_params algorithm.

  Ten tries of area ~ U(scale) * HW and log-aspect ~ U(log ratio); fall back to the largest
  centre crop with the aspect ratio clamped into ``ratio``.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      y0 = int(rng.integers(0, height - h + 1))
      x0 = int(rng.integers(0, width - w + 1))
      return x0, y0, x0 + w, y0 + h
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    w, h = width, height
  y0, x0 = (height - h) // 2, (width - w) // 2
  return x0, y0, x0 + w, y0 + h


def crop_resize(image: np.ndarray, box, size: int) -> np.ndarray:
  """Bilinear resize of ``image[box]`` to (size, size) in one Pillow call (antialiased)."""
  pil = Image.fromarray(image)
  return np.asarray(pil.resize((size, size), Image.BILINEAR, box=box), np.uint8)


def center_view(image: np.ndarray, size: int, crop_frac: float = 1.0) -> np.ndarray:
  """Evaluation view: resize the shorter side to size / crop_frac, then centre-crop size x size."""
  h, w = image.shape[:2]
  short = min(h, w)
  side = short * crop_frac
  y0, x0 = (h - side) / 2, (w - side) / 2
  return crop_resize(image, (x0, y0, x0 + side, y0 + side), size)


class MultiCrop(grain.transforms.RandomMap):
  """Record -> {view name: uint8 (size, size, 3) for each CropSpec, 'label', 'index'}."""

  def __init__(self, specs: Sequence[CropSpec]):
    self.specs = tuple(specs)

  def random_map(self, record, rng: np.random.Generator):
    image = record['image']
    out = {'label': record['label'], 'index': record['index']}
    for spec in self.specs:
      box = random_resized_crop_box(rng, image.shape[0], image.shape[1], spec.scale, spec.ratio)
      view = crop_resize(image, box, spec.size)
      if rng.uniform() < spec.flip:
        view = view[:, ::-1]
      out[spec.name] = np.ascontiguousarray(view)
    return out


def train_dataset(source, specs: Sequence[CropSpec], *, global_batch: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """The infinite, deterministic training MapDataset of this process's per-step batches."""
  if global_batch % process_count:
    raise ValueError(f'config.data.batch_size={global_batch} is not divisible by the number of '
                     f'processes ({process_count})')
  local_batch = global_batch // process_count
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  ds = ds.random_map(MultiCrop(specs), seed=seed)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds[process_index::process_count]


def make_iterator(ds: grain.MapDataset, num_workers: int = 0, prefetch: int = 2):
  """A checkpointable iterator (``get_state``/``set_state``) over ``ds``.

  ``num_workers > 0`` decodes and crops in worker processes (grain ``mp_prefetch``); the batches and
  their order do not depend on the worker count.
  """
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, prefetch),
                                               prefetch_buffer_size=max(1, prefetch)))
  if num_workers > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():  # grain workers read absl flags (grain issue with 0.2.x).
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(it_ds)


def eval_batches(source, size: int, batch_size: int, crop_frac: float = 1.0,
                 process_index: int = 0, process_count: int = 1):
  """Yields (images uint8 (b, size, size, 3), labels, valid mask) covering ``source`` once.

  Every batch has the same shape (the last is padded and marked invalid) so one compiled feature
  function serves them all; each process reads its slice of every batch.
  """
  n = len(source)
  local = batch_size // process_count
  for start in range(0, n, batch_size):
    idx = np.arange(start + process_index * local, start + (process_index + 1) * local)
    valid = idx < n
    idx = np.where(valid, idx, 0)
    recs = [source[int(i)] for i in idx]
    images = np.stack([center_view(r['image'], size, crop_frac) for r in recs])
    labels = np.asarray([r['label'] for r in recs], np.int32)
    yield images, labels, valid
