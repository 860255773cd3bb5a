"""Command-line entry point.

    python -m ssl_jax.main --config=configs/simclr.py:builtin --workdir=/tmp/run \
        [--config.train.steps=200 ...] [--mode=pretrain|eval|export|memory]
    python -m ssl_jax.main --list      # methods, configs and their variants, backbones, datasets
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ssl_jax import runtime

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file[:variant].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and summaries.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '', 'Multi-process runs outside Cloud TPU/Slurm: host:port of process '
    '0 (jax.distributed). On TPU pods and Slurm the cluster is detected automatically.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Processes in the job (explicit mode).')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, 'This process, 0..num_processes-1.')
_LIST = flags.DEFINE_bool('list', False, 'Print the methods, configs (with their variants), '
                          'backbones and datasets, then exit.')
_MODE = flags.DEFINE_enum('mode', 'pretrain', ['pretrain', 'eval', 'export', 'memory'],
                          'pretrain: train (resuming from --workdir) then evaluate; '
                          'eval: kNN (k in config.eval.knn_ks) + linear probe of the latest '
                          'checkpoint in --workdir -> WORKDIR/eval.json, TensorBoard, PNG; '
                          'export: its encoder -> WORKDIR/export (Orbax + timm safetensors); '
                          'memory: compile the train step ahead of time on abstract inputs and '
                          'report the per-device memory it needs (no data, no training).')


def run_eval(config, workdir: str) -> dict:
  """kNN at every k of ``config.eval.knn_ks`` and the linear probe of the latest checkpoint in
  ``workdir`` (see ssl_jax/eval/run.py); writes ``workdir/eval.json``."""
  from ssl_jax.eval import run  # pylint: disable=g-import-not-at-top
  return run.evaluate(config, workdir, overrides=config_overrides(sys.argv))


def run_export(config, workdir: str) -> dict:
  """The latest checkpoint's encoder to ``workdir/export`` (see ssl_jax/export/run.py)."""
  from ssl_jax.export import run  # pylint: disable=g-import-not-at-top
  return run.export(config, workdir, overrides=config_overrides(sys.argv))


def config_overrides(argv) -> tuple[str, ...]:
  """The dotted fields given as ``--config.FIELD[=value]``: eval and export take the run's saved
  config and only these from the command line (train/workdir.py, reader_config)."""
  return tuple(a[len('--config.'):].split('=')[0] for a in argv if a.startswith('--config.'))


def _is_user_error(e: BaseException) -> bool:
  """Errors our own code raised on purpose (bad config/workdir/checkpoint/data, non-finite run):
  they are printed as one line. Anything raised deeper (a bug) keeps its full traceback."""
  from ssl_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from ssl_jax.train import loop  # pylint: disable=g-import-not-at-top
  if isinstance(e, (ckpt_lib.CheckpointError, ckpt_lib.NonFiniteStateError, loop.NonFiniteError,
                    ckpt_lib.CheckpointMismatchError)):
    return True
  tb = e.__traceback__
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  origin = tb.tb_frame.f_code.co_filename if tb is not None else ''
  ours = os.sep + 'ssl_jax' + os.sep in origin or os.sep + 'configs' + os.sep in origin
  return isinstance(e, (ValueError, TypeError, OSError, RuntimeError)) and ours


def main(argv):
  logging.get_absl_handler().addFilter(runtime.QuietLibraries())
  try:
    _main(argv)
  except app.UsageError as e:  # one line, not the module docstring and the flags first
    print(f'ssl_jax: usage error: {e} (python -m ssl_jax.main --help lists the flags; --list '
          'the methods and configs)', file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except
    if not _is_user_error(e):
      raise
    logging.debug('full traceback', exc_info=True)
    print(f'ssl_jax: error: {type(e).__name__}: {e}', file=sys.stderr)
    sys.exit(1)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _LIST.value:
    from ssl_jax import catalog  # pylint: disable=g-import-not-at-top
    print(catalog.format_catalog(catalog.catalog()))
    return
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/simclr.py:builtin')
  try:
    config.keys()  # a config file that failed to load raises here, not deep inside the trainer
  except OSError as e:
    raise ValueError(' '.join(str(e).split())) from None
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required')
  runtime.setup(config, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from ssl_jax.train import loop  # pylint: disable=g-import-not-at-top
  from ssl_jax.train import checkpoint as ckpt_lib, preemption  # pylint: disable=g-import-not-at-top
  ckpt_lib.check_workdir(_WORKDIR.value)
  if _MODE.value == 'pretrain':
    result = loop.train_and_evaluate(config, _WORKDIR.value)
    if result.get('preempted'):
      print(f"ssl_jax: preempted: checkpoint saved at step {result['stopped_at_step']}; rerun the "
            'same command to resume.', file=sys.stderr)
      sys.exit(preemption.EXIT_PREEMPTED)
  elif _MODE.value == 'export':
    result = run_export(config, _WORKDIR.value)
  elif _MODE.value == 'memory':
    from ssl_jax.train import memory  # pylint: disable=g-import-not-at-top
    result = memory.memory_report(config)
    print(memory.format_report(result), file=sys.stderr)
  else:
    result = run_eval(config, _WORKDIR.value)
  print(json.dumps(result, indent=2))   # the summary, once (stdout; the log has the run)


if __name__ == '__main__':
  runtime.reexec_with_hugepages()
  app.run(main, flags_parser=runtime.parse_flags)
