"""The HuBERT units command: k-means targets of the next iteration, from MFCC frames or from a
block of a trained run's encoder (its latest checkpoint, read-only), written as the units file
``configs/hubert.py``'s ``method.units_path`` reads. The pieces (features, k-means, the file) are
``ssl_jax/methods/speech/hubert_units.py``; this module adds the checkpoint reader and the CLI::

    python -m ssl_jax.eval.hubert_units --config=configs/hubert.py:builtin \
        --units=mfcc --num_units=100 --out=/tmp/units_it1.npz
    python -m ssl_jax.eval.hubert_units --config=configs/hubert.py:builtin \
        --units=layer --workdir=/tmp/hubert_it1 --layer=1 --num_units=100 --out=/tmp/units_it2.npz
"""
from __future__ import annotations

import json
import sys
import time

import jax
import numpy as np

from ssl_jax.methods.speech import hubert_units as units_lib
from ssl_jax.methods.speech.hubert_units import SOURCES, mfcc_units, save_units
from ssl_jax.train import experiment


def layer_units(config, workdir: str, layer: int, num_units: int, seed: int) -> dict:
  """:func:`layer_units_from_params` of the encoder of the latest checkpoint in ``workdir``
  (opened read-only with the run's saved config, ``Experiment.for_reading``; only the device
  mesh is ``config``'s). ``config`` gives the data and the k-means settings."""
  run = experiment.Experiment.for_reading(config, workdir, overrides=('mesh',))
  state = run.restore_for_reading()
  model = run.config.model
  return units_lib.layer_units_from_params(
      config, jax.device_get(state.params['backbone']), model.to_dict(),
      bool(model.get('audio_normalize', True)), layer, num_units, seed)


# ------------------------------------------------------------------------------------------------
# The command.
# ------------------------------------------------------------------------------------------------

def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'A HuBERT config file[:variant] (its data and '
                                  'config.method.kmeans_* settings).', lock_config=True)
  flags.DEFINE_enum('units', 'mfcc', list(SOURCES), "mfcc: k-means of MFCC frames (iteration "
                    "1); layer: of block --layer of the encoder in --workdir (iteration 2+).")
  flags.DEFINE_integer('num_units', 0, 'K, the number of units (0: config.method.num_units).')
  flags.DEFINE_string('workdir', '', "--units=layer: the previous iteration's run.")
  flags.DEFINE_integer('layer', 0, '--units=layer: the 1-based transformer block whose output '
                       'is clustered (HuBERT BASE: 6 of 12).')
  flags.DEFINE_integer('seed', -1, 'k-means seed (-1: config.seed).')
  flags.DEFINE_string('out', '', 'Where to write the units file (.npz); local or gs://.')
  return flags.FLAGS


def main(argv, flag_values) -> dict:
  """Runs the command with parsed flags; returns what it printed as a dict."""
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {argv[1:]}')
  f = flag_values
  config = f.config
  if config is None:
    raise ValueError('--config is required, e.g. --config=configs/hubert.py:builtin')
  if not f.out:
    raise ValueError('--out is required: where to write the units file (.npz)')
  num_units = f.num_units or int(config.method.num_units)
  seed = config.seed if f.seed < 0 else f.seed
  start = time.time()
  if f.units == 'mfcc':
    centroids, pnmi = mfcc_units(config, num_units, seed)
    path = save_units(f.out, centroids, 'mfcc', pnmi=pnmi)
    layer = 0
  else:
    if not f.workdir or f.layer < 1:
      raise ValueError('--units=layer needs --workdir (the previous iteration\'s run) and '
                       '--layer=N >= 1 (the block to cluster)')
    u = layer_units(config, f.workdir, f.layer, num_units, seed)
    centroids, pnmi, layer = u['centroids'], u['pnmi'], f.layer
    path = save_units(f.out, centroids, 'layer', layer=layer, encoder_params=u['encoder_params'],
                      model_config=u['model_config'], audio_normalize=u['audio_normalize'],
                      pnmi=pnmi)
  result = {'units': f.units, 'layer': layer, 'num_units': num_units, 'seed': seed,
            'dim': int(centroids.shape[1]), 'pnmi': None if np.isnan(pnmi) else round(pnmi, 4),
            'seconds': round(time.time() - start, 1), 'out': path}
  print(json.dumps(result))
  return result


def _run():
  from absl import app  # pylint: disable=g-import-not-at-top
  from ssl_jax import runtime  # pylint: disable=g-import-not-at-top
  flag_values = _define_flags()

  def entry(argv):
    try:
      main(argv, flag_values)
    except (ValueError, FileNotFoundError) as e:
      print(f'hubert_units: error: {e}', file=sys.stderr)
      sys.exit(1)

  app.run(entry, flags_parser=runtime.parse_flags)


if __name__ == '__main__':
  _run()
