"""DINO-style attention maps: the last block's [CLS] -> patch attention of every head, as PNGs.

    python -m ssl_jax.viz.attention --config=configs/dino.py:builtin --workdir=/tmp/dino_builtin \
        --out=/tmp/dino_attn [--images=a.png,b.jpg] [--num_images=4] [--size=24]

Loads the latest checkpoint of ``--workdir`` (the encoder the method exports, i.e. the teacher for
DINO/iBOT), resizes each image (centre crop) to ``--size`` (default ``data.image_size``) and
writes, per image, ``<name>_input.png``, one heat map per head ``<name>_head<h>.png``, their mean
``<name>_mean.png`` and a strip ``<name>_grid.png`` (input, then every head). Heat maps are
min-max normalised per head and upsampled with nearest-neighbour so patch boundaries stay
visible (Caron et al. 2021, Fig. 1 and 3). Without ``--images`` the first ``--num_images`` images
of the config's evaluation split are used. Works for any method with a ViT backbone.
"""
from __future__ import annotations

import io
import os

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from PIL import Image

from ssl_jax import paths as paths_lib

def _define_flags():
  """Command-line flags, defined only when this module is the program (so importing it
  next to another absl program never redefines --config)."""
  global _CONFIG, _WORKDIR, _IMAGES, _NUM, _OUT, _SIZE, _SCALE, _ALLOW_INIT  # pylint: disable=global-statement
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file[:variant].')
  _WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory with checkpoints.')
  _IMAGES = flags.DEFINE_list('images', [], 'Image files; default: images of the eval split.')
  _NUM = flags.DEFINE_integer('num_images', 4, 'How many eval-split images without --images.')
  _OUT = flags.DEFINE_string('out', None, 'Output directory for the PNGs.')
  _SIZE = flags.DEFINE_integer('size', 0, 'Input side in pixels (0: config.data.image_size).')
  _SCALE = flags.DEFINE_integer('scale', 8, 'Upsampling factor of the written PNGs.')
  _ALLOW_INIT = flags.DEFINE_bool('allow_init', False,
                                  'Use a random-init encoder when the workdir has no checkpoint.')


def cls_attention(method, params, buffers, images_uint8) -> np.ndarray:
  """(B, heads, gh, gw) last-block attention of [CLS] to the patches (rows sum to <= 1)."""
  from ssl_jax.models.vit import ViT  # pylint: disable=g-import-not-at-top
  if not isinstance(method.backbone, ViT):
    raise ValueError('attention maps need a ViT backbone (config.model.backbone=vit_*)')
  if method.backbone.num_prefix_tokens < 1:
    raise ValueError('attention maps need a [CLS] token (num_prefix_tokens >= 1)')
  x = method.normalize(images_uint8)
  att = method.backbone.apply(method.encoder_variables(params, buffers), x,
                              method=ViT.last_selfattention)
  p = method.backbone.num_prefix_tokens
  b, h = att.shape[:2]
  g = x.shape[1] // method.backbone.patch_size, x.shape[2] // method.backbone.patch_size
  return np.asarray(att[:, :, 0, p:]).reshape(b, h, *g)


def colorize(heat: np.ndarray) -> np.ndarray:
  """(H, W) in [0, 1] -> (H, W, 3) uint8 with a black-red-yellow-white ramp."""
  h = np.clip(heat, 0.0, 1.0)[..., None]
  stops = np.array([[0, 0, 0], [180, 0, 0], [255, 200, 0], [255, 255, 255]], np.float32)
  pos = h * (len(stops) - 1)
  lo = np.clip(np.floor(pos).astype(int), 0, len(stops) - 2)
  frac = pos - lo
  rgb = stops[lo[..., 0]] * (1 - frac) + stops[lo[..., 0] + 1] * frac
  return rgb.astype(np.uint8)


def _normalise(a: np.ndarray) -> np.ndarray:
  lo, hi = a.min(), a.max()
  return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def write_attention_pngs(image: np.ndarray, att: np.ndarray, out_dir: str, name: str,
                         scale: int = 8) -> list[str]:
  """Writes the PNGs of one image (uint8 (S, S, 3)) and its (heads, gh, gw) attention."""
  out = paths_lib.as_path(out_dir)   # a local folder or a URL (gs://...)
  out.mkdir(parents=True, exist_ok=True)
  side = image.shape[0] * scale
  up = lambda rgb: Image.fromarray(rgb).resize((side, side), Image.NEAREST)
  tiles = [up(image)]
  paths = [_save_png(tiles[0], out / f'{name}_input.png')]
  for h in range(att.shape[0]):
    tiles.append(up(colorize(_normalise(att[h]))))
    paths.append(_save_png(tiles[-1], out / f'{name}_head{h}.png'))
  mean_path = _save_png(up(colorize(_normalise(att.mean(0)))), out / f'{name}_mean.png')
  grid = Image.new('RGB', (side * len(tiles), side))
  for i, t in enumerate(tiles):
    grid.paste(t, (i * side, 0))
  grid_path = _save_png(grid, out / f'{name}_grid.png')
  return paths + [mean_path, grid_path]


def _save_png(img, path) -> str:
  """Saves ``img`` as a PNG at ``path`` (local or URL) and returns the path as a string."""
  buf = io.BytesIO()
  img.save(buf, format='PNG')
  path.write_bytes(buf.getvalue())
  return str(path)


def load_images(paths, size: int) -> tuple[np.ndarray, list[str]]:
  from ssl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  images, names = [], []
  for p in paths:
    with paths_lib.as_path(p).open('rb') as f:   # a local file or a URL
      img = np.asarray(Image.open(f).convert('RGB'))
    images.append(pipeline.center_view(img, size))
    names.append(os.path.splitext(os.path.basename(p))[0])
  return np.stack(images), names


def main(argv):
  del argv
  from ssl_jax.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  from ssl_jax.train import experiment  # pylint: disable=g-import-not-at-top
  from ssl_jax.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  if _WORKDIR.value is None or _OUT.value is None:
    raise app.UsageError('--workdir and --out are required')
  try:   # the run's saved config and latest checkpoint, read-only
    exp = experiment.Experiment.for_reading(config, _WORKDIR.value)
    state = exp.restore_for_reading()
  except workdir_lib.NoCheckpointError as e:
    if not _ALLOW_INIT.value:
      raise app.UsageError(f'{e} (or pass --allow_init to visualise a random-init encoder)')
    exp = experiment.Experiment(config, _WORKDIR.value)
    state = exp.initial_state()
  config = exp.config
  size = _SIZE.value or config.data.image_size
  if _IMAGES.value:
    images, names = load_images(_IMAGES.value, size)
  else:
    src = sources.get_source(config.data, config.data.eval_split)
    images = np.stack([pipeline.center_view(src[i]['image'], size)
                       for i in range(_NUM.value)])
    names = [f'{config.data.name}_{config.data.eval_split}_{i}' for i in range(_NUM.value)]
  att = cls_attention(exp.method, state.params, state.buffers, jax.numpy.asarray(images))
  for img, a, name in zip(images, att, names):
    paths = write_attention_pngs(img, a, _OUT.value, name, _SCALE.value)
    logging.info('wrote %d PNGs for %s', len(paths), name)
  print(f'wrote attention maps of {len(names)} image(s), {att.shape[1]} heads, step '
        f'{int(state.step)} to {_OUT.value}')


if __name__ == '__main__':
  _define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)
