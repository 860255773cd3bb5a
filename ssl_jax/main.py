"""Command-line entry point.

    python -m ssl_jax.main --config=configs/simclr.py:builtin --workdir=/tmp/run \
        [--config.train.steps=200 ...] [--mode=pretrain|eval]
"""
from __future__ import annotations

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file[:variant].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and summaries.')
_MODE = flags.DEFINE_enum('mode', 'pretrain', ['pretrain', 'eval'],
                          'pretrain: train (resuming from --workdir) then evaluate; '
                          'eval: kNN of the latest checkpoint in --workdir.')


def run_eval(config, workdir: str) -> dict:
  """kNN top-1 of the latest checkpoint in ``workdir``; writes ``workdir/eval.json``."""
  from ssl_jax.train import loop  # pylint: disable=g-import-not-at-top
  exp = loop.Experiment(config, workdir)
  state, _ = exp.restore_or_init()
  exp.checkpointer.close()
  result = {'step': int(state.step), 'knn_top1': exp.knn_eval(state),
            'knn_k': config.eval.knn_k, 'knn_temperature': config.eval.knn_temperature}
  with open(os.path.join(exp.workdir, 'eval.json'), 'w') as f:
    json.dump(result, f, indent=2)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/simclr.py:builtin')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required')
  from ssl_jax.train import loop  # pylint: disable=g-import-not-at-top
  os.makedirs(_WORKDIR.value, exist_ok=True)
  if _MODE.value == 'pretrain':
    result = loop.train_and_evaluate(config, _WORKDIR.value)
  else:
    result = run_eval(config, _WORKDIR.value)
  logging.info('%s', result)
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  app.run(main)
