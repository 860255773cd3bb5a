"""Reconstruction grid of a masked-image-modelling checkpoint: original / masked / reconstructed.

    python -m ssl_jax.viz.reconstruction --config=configs/mae.py:builtin \
        --workdir=/tmp/mae_builtin --out=grid.png [--num_images=8] [--scale=4] [--seed=0]

Loads the latest checkpoint in ``--workdir`` (it is an error if there is none), takes
``--num_images`` evaluation images evenly spaced over ``config.data.eval_split`` (centre view),
draws a mask with ``--seed`` and writes a PNG with three rows: the originals, the masked inputs
(hidden patches grey) and the reconstructions (visible patches pasted over the prediction, as MAE's
figures). Works for every method with a ``reconstruct`` method (mae, simmim, multimae; for vqvae
the middle row is the code-index map).
"""
from __future__ import annotations

import io

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from ssl_jax import paths

def _define_flags():
  """Command-line flags, defined only when this module is the program (so importing it
  next to another absl program never redefines --config)."""
  global _CONFIG, _WORKDIR, _OUT, _NUM, _SCALE, _SEED  # pylint: disable=global-statement
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file[:variant].')
  _WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory holding checkpoints/.')
  _OUT = flags.DEFINE_string('out', 'reconstruction.png', 'PNG file to write.')
  _NUM = flags.DEFINE_integer('num_images', 8, 'Images (columns) in the grid.')
  _SCALE = flags.DEFINE_integer('scale', 4, 'Nearest-neighbour upscaling of every image.')
  _SEED = flags.DEFINE_integer('seed', 0, 'Seed of the mask.')


def grid_image(rows, scale: int = 1, pad: int = 1) -> np.ndarray:
  """Rows of (B, H, W, 3) float [0, 1] images -> one uint8 (R*(H+pad)+pad, B*(W+pad)+pad, 3)."""
  rows = [np.asarray(r, np.float32) for r in rows]
  b, h, w, _ = rows[0].shape
  h, w = h * scale, w * scale
  out = np.ones((len(rows) * (h + pad) + pad, b * (w + pad) + pad, 3), np.float32)
  for i, row in enumerate(rows):
    for j in range(b):
      img = np.repeat(np.repeat(row[j], scale, axis=0), scale, axis=1)
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      out[y:y + h, x:x + w] = img
  return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def reconstruction_grid(config, workdir: str, num_images: int = 8, seed: int = 0,
                        scale: int = 4) -> np.ndarray:
  """The uint8 grid (originals / masked / reconstructions) of the latest checkpoint in workdir."""
  import jax  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  from ssl_jax.train import experiment  # pylint: disable=g-import-not-at-top
  exp = experiment.Experiment.for_reading(config, workdir)   # its saved config, read-only
  config = exp.config
  if not hasattr(exp.method, 'reconstruct'):
    raise ValueError(f'method {config.method.name!r} has no reconstruct(); use mae, simmim, '
                     'multimae or vqvae')
  state = exp.restore_for_reading()
  source = sources.get_source(config.data, config.data.eval_split)
  idx = np.linspace(0, len(source) - 1, num_images).round().astype(int)  # spread over classes
  images = np.stack([pipeline.center_view(source[int(i)]['image'], config.data.image_size,
                                          config.data.eval_crop_frac) for i in idx])
  params, buffers = jax.device_get((state.params, state.buffers))
  out = jax.jit(exp.method.reconstruct)(params, buffers, images, jax.random.PRNGKey(seed))
  rows = [out['original'], out['masked'], out['reconstruction']]
  return grid_image(jax.device_get(rows), scale)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError('--config and --workdir are required')
  from PIL import Image  # pylint: disable=g-import-not-at-top
  grid = reconstruction_grid(_CONFIG.value, _WORKDIR.value, _NUM.value, _SEED.value, _SCALE.value)
  out = paths.as_path(_OUT.value)   # a local file or a URL (gs://...)
  out.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  Image.fromarray(grid).save(buf, format='PNG', optimize=True)
  out.write_bytes(buf.getvalue())
  print(f'wrote {_OUT.value} ({grid.shape[1]}x{grid.shape[0]})')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
