"""Host input pipeline on grain: shuffle, crop, batch, shard per JAX process.

The training stream is a grain ``MapDataset`` (random access, so every batch is a pure function of
(seed, step)):

    source -> shuffle(seed) -> repeat -> random_map(crops) -> batch(per-process batch)
           -> [process_index::process_count]

Shuffling and cropping are global (identical on every process) and each process takes its own
slice of every *global* batch, so a run on P processes sees exactly the same global batches as a
run on one process. The iterator's position is a small JSON state that goes into the checkpoint.
(This is why per-process splits such as ``tfds.split_for_jax_process`` are not used: every process
opens the whole source and slices global batches instead.)

Records that cannot be read are replaced inside the source (``sources.RobustSource``), so batch
shapes stay static. Images may have any size: every crop is resized to its ``CropSpec.size``.

Besides grain, ``IterableInput`` takes any Python iterable of numpy batches (for example
``tfds.as_numpy`` of an existing tf.data pipeline) and gives it the same interface.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Sequence

import grain
import numpy as np
from absl import logging
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


#: dtypes of the non-image fields of every training record (sources, MultiCrop, IterableInput).
LABEL_DTYPE = np.int32
INDEX_DTYPE = np.int64


def batch_spec(specs: Sequence[CropSpec], batch: int) -> dict:
  """{key: (shape, numpy dtype)} of a training batch of ``batch`` records as the pipeline
  delivers it: one uint8 (batch, size, size, 3) array per crop view, 'label' and 'index'.

  The trainer, eval, export and the memory check build their sample batches from this, so they
  need no training data; tests check it against real batches of both inputs.
  """
  out = {'label': ((batch,), LABEL_DTYPE), 'index': ((batch,), INDEX_DTYPE)}
  out.update({s.name: ((batch, s.size, s.size, 3), np.uint8) for s in specs})
  return out


class MultiCrop(grain.transforms.RandomMap):
  """Record -> {view name: uint8 (size, size, 3) for each CropSpec, 'label', 'index'}.

  The image modality's host transform. A host transform (``Method.host_transform``) is a grain
  ``RandomMap`` from a source record to one fixed-shape training record, with
  ``batch_spec(batch)`` (the ``{key: (shape, dtype)}`` of a batch of them, which shapes the state
  before any data is read). Images are evaluated on :func:`eval_batches`' centre crops; another
  modality's transform adds ``eval_view(record)``, the array its frozen encoder sees at
  evaluation (``data/audio.py``'s waveform clips).
  """

  def __init__(self, specs: Sequence[CropSpec]):
    self.specs = tuple(specs)

  def batch_spec(self, batch: int) -> dict:
    return batch_spec(self.specs, batch)

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


def as_transform(specs_or_transform):
  """A host transform from crop specs (wrapped in :class:`MultiCrop`) or a transform as is."""
  if isinstance(specs_or_transform, (tuple, list)):
    return MultiCrop(specs_or_transform)
  return specs_or_transform


def train_dataset(source, specs_or_transform, *, global_batch: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """The infinite, deterministic training MapDataset of this process's per-step batches;
  ``specs_or_transform``: the crop specs of an image method or any host transform."""
  if global_batch % process_count:
    raise ValueError(f'config.data.batch_size={global_batch} is not divisible by the number of '
                     f'processes ({process_count})')
  local_batch = global_batch // process_count
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  ds = ds.random_map(as_transform(specs_or_transform), seed=seed)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds[process_index::process_count]


class BatchIterator:
  """Iterator over a random-access MapDataset of batches; its state is the batch position.

  ``get_state()`` is ``{'batches': n}`` whatever the worker count (grain's own iterator states
  differ between in-process and multi-process iterators), so a run checkpointed with 0 workers
  resumes with 16 and vice versa; ``set_state`` restarts reading at batch n (``ds[n:]``), which is
  exact because batch n is a pure function of (seed, n). Workers start lazily on the first batch.
  """

  def __init__(self, ds: grain.MapDataset, num_workers: int = 0, prefetch: int = 2):
    self.ds = ds
    self.num_workers = int(num_workers)
    self.prefetch = max(1, int(prefetch))
    self.position = 0
    self._it = None

  def _open(self):
    it_ds = self.ds[self.position:].to_iter_dataset(
        grain.ReadOptions(num_threads=self.prefetch, prefetch_buffer_size=self.prefetch))
    if self.num_workers > 0:
      from absl import flags  # pylint: disable=g-import-not-at-top
      if not flags.FLAGS.is_parsed():  # grain workers read absl flags (grain issue with 0.2.x).
        flags.FLAGS.mark_as_parsed()
      it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers))
    self._it = iter(it_ds)

  def __iter__(self):
    return self

  def __next__(self):
    if self._it is None:
      self._open()
    batch = next(self._it)
    self.position += 1
    return batch

  def get_state(self) -> dict:
    return {'batches': self.position}

  def set_state(self, state: dict):
    # 'next_index': the state format of the plain grain iterator of earlier checkpoints.
    position = int(state['batches'] if 'batches' in state else state['next_index'])
    if position != self.position or self._it is None:
      self.close()
      self.position = position

  def close(self):
    if self._it is not None and hasattr(self._it, 'close'):
      self._it.close()
    self._it = None


def make_iterator(ds: grain.MapDataset, num_workers: int = 0, prefetch: int = 2) -> BatchIterator:
  """A checkpointable iterator (``get_state``/``set_state``) over ``ds``.

  ``num_workers > 0`` decodes and crops in worker processes (grain ``mp_prefetch``); the batches,
  their order and the iterator state do not depend on the worker count.
  """
  return BatchIterator(ds, num_workers, prefetch)


def eval_batches(source, size: int, batch_size: int, crop_frac: float = 1.0,
                 process_index: int = 0, process_count: int = 1, view=None):
  """Yields (images uint8 (b, size, size, 3), labels, valid mask) covering ``source`` once.

  Every batch has the same shape (the last is padded and marked invalid) so one compiled feature
  function serves them all; each process reads its slice of every batch. ``view``: record ->
  array, the eval input of another modality (a host transform's ``eval_view``); ``size`` and
  ``crop_frac`` are then unused.
  """
  if view is None:
    view = lambda r: center_view(r['image'], size, crop_frac)
  n = len(source)
  local = batch_size // process_count
  for start in range(0, n, batch_size):
    idx = np.arange(start + process_index * local, start + (process_index + 1) * local)
    valid = idx < n
    idx = np.where(valid, idx, 0)
    recs = [source[int(i)] for i in idx]
    images = np.stack([view(r) for r in recs])
    labels = np.asarray([r['label'] for r in recs], np.int32)
    yield images, labels, valid


class IterableInput:
  """Training batches from any Python iterable of numpy batches, with a checkpointable position.

  Each element is this process's batch (``config.data.batch_size // jax.process_count()`` images)
  in one of these forms:

  * a dict holding every view the method asks for (``CropSpec.name`` keys, uint8 NHWC): used as is;
  * a dict with ``'image'`` (uint8 (B, H, W[, C]); floats in [0, 1] are scaled to 0..255), or a
    tuple ``(image, label)`` as ``tfds.as_numpy(ds)`` gives with ``as_supervised=True``: the host
    cuts the method's crops (``MultiCrop``) with a generator seeded by (seed, batch number,
    process), so a run stays a function of (config, seed, the iterable).

  ``'label'`` and ``'index'`` default to -1 when absent (methods that read ``index``, e.g. a memory
  bank, need the iterable to provide it). No TensorFlow import happens here.

  ``get_state()`` is ``{'batches': n}``. ``set_state`` after a restart skips ``n`` batches of the
  fresh iterable, so a resumed run continues where it stopped if the iterable is deterministic
  (skipping costs reading those batches once). A re-iterable object (not a one-shot
  iterator) is re-iterated when it runs out; a one-shot iterator that runs out is an error.
  """

  def __init__(self, iterable: Iterable[Any], specs: Sequence[CropSpec], *, local_batch: int,
               seed: int = 0, process_index: int = 0):
    self.iterable = iterable
    self.specs = tuple(specs)
    self.crop = MultiCrop(self.specs)
    self.local_batch = int(local_batch)
    self.seed = int(seed)
    self.process_index = int(process_index)
    self.batches = 0
    self._it = iter(iterable)
    self._one_shot = self._it is iterable
    self._peeked = None

  # -- state --------------------------------------------------------------------------------------
  def get_state(self) -> dict:
    return {'batches': self.batches}

  def set_state(self, state: dict):
    target = int(state['batches'])
    if target == self.batches:
      return  # a peeked batch, if any, is batch number ``target``
    pos = self.batches + (self._peeked is not None)  # raw elements taken from the iterator
    self._peeked = None
    if target < pos:
      if self._one_shot:
        raise ValueError(f'cannot rewind a one-shot iterator from batch {pos} to {target}; pass '
                         're-iterable data (e.g. the tf.data Dataset, not an iterator of it)')
      self._it, pos = iter(self.iterable), 0
    if target > pos:
      logging.info('IterableInput: skipping %d batches to resume the data order', target - pos)
    while pos < target:
      self._next_raw()
      pos += 1
    self.batches = target

  # -- iteration ----------------------------------------------------------------------------------
  def _next_raw(self):
    try:
      return next(self._it)
    except StopIteration:
      if self._one_shot:
        raise RuntimeError(
            f'the training iterable ran out after {self.batches} batches; pass an endless one '
            '(e.g. ds.repeat()) or a re-iterable object') from None
      logging.info('IterableInput: the iterable ran out after %d batches; starting it again',
                   self.batches)
      self._it = iter(self.iterable)
      try:
        return next(self._it)
      except StopIteration:
        raise RuntimeError('the training iterable yields no batches') from None

  def peek(self) -> dict:
    """The next batch without consuming it (the trainer builds shapes from it)."""
    if self._peeked is None:
      self._peeked = self._convert(self._next_raw(), self.batches)
    return self._peeked

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = self.peek()
    self._peeked = None
    self.batches += 1
    return batch

  def _convert(self, raw, number: int) -> dict:
    if isinstance(raw, (tuple, list)):
      raw = {'image': raw[0], 'label': raw[1]} if len(raw) > 1 else {'image': raw[0]}
    if not isinstance(raw, dict):
      raise TypeError(f'the training iterable yielded {type(raw).__name__}; expected a dict of '
                      'numpy arrays or an (image, label) tuple')
    names = [s.name for s in self.specs]
    if all(n in raw for n in names):
      views = {n: np.asarray(raw[n]) for n in names}
    elif 'image' in raw:
      views = None
    else:
      raise KeyError(f'the training batch has keys {sorted(raw)}; it needs \'image\' or every '
                     f'view of the method ({names})')
    size = len(raw['image']) if views is None else len(views[names[0]])
    if size != self.local_batch:
      raise ValueError(f'the training iterable yielded a batch of {size}; expected '
                       f'{self.local_batch} (config.data.batch_size / number of processes)')
    out = {'label': np.asarray(raw.get('label', np.full(size, -1)), LABEL_DTYPE).reshape(size),
           'index': np.asarray(raw.get('index', np.full(size, -1)), INDEX_DTYPE).reshape(size)}
    if views is None:
      images = _as_uint8_rgb(np.asarray(raw['image']))
      rng = np.random.default_rng([self.seed, number, self.process_index])
      crops = [self.crop.random_map({'image': im, 'label': 0, 'index': 0}, rng) for im in images]
      views = {n: np.stack([c[n] for c in crops]) for n in names}
    out.update(views)
    return out


def _as_uint8_rgb(images: np.ndarray) -> np.ndarray:
  """(B, H, W[, 1|3]) uint8 or float images -> uint8 (B, H, W, 3)."""
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise ValueError(f'training images must be (B, H, W[, C]); got shape {images.shape}')
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  if images.dtype != np.uint8:
    x = images.astype(np.float32)
    if x.size and x.max() <= 1.0:
      x = x * 255.0
    images = np.clip(np.round(x), 0, 255).astype(np.uint8)
  return images
