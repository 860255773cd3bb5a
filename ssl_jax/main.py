"""Command-line entry point.

    python -m ssl_jax.main --config=configs/simclr.py:builtin --workdir=/tmp/run \
        [--config.train.steps=200 ...] [--mode=pretrain|eval|export|memory]
"""
from __future__ import annotations

import json
import logging as std_logging
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file[:variant].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and summaries.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '', 'Multi-process runs outside Cloud TPU/Slurm: host:port of process '
    '0 (jax.distributed). On TPU pods and Slurm the cluster is detected automatically.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Processes in the job (explicit mode).')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, 'This process, 0..num_processes-1.')
_MODE = flags.DEFINE_enum('mode', 'pretrain', ['pretrain', 'eval', 'export', 'memory'],
                          'pretrain: train (resuming from --workdir) then evaluate; '
                          'eval: kNN (k in config.eval.knn_ks) + linear probe of the latest '
                          'checkpoint in --workdir -> WORKDIR/eval.json, TensorBoard, PNG; '
                          'export: its encoder -> WORKDIR/export (Orbax + timm safetensors); '
                          'memory: compile the train step ahead of time on abstract inputs and '
                          'report the per-device memory it needs (no data, no training).')


HUGEPAGE_TUNABLE = 'glibc.malloc.hugetlb=1'


def hugepage_env(environ) -> dict | None:
  """The environment to re-execute this process with so that glibc's malloc backs large blocks
  with transparent huge pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, glibc >= 2.35), or
  None when that is already set, opted out of (``SSL_JAX_HUGEPAGES=0``) or not Linux.

  Why: XLA:CPU allocates a step's temporary buffers afresh each step, so every 4 KiB page of
  them is faulted in again: a ViT-Tiny SimCLR step at batch 64 took ~716,000 minor page faults
  (2.8 GB) and 2.6 s of kernel time per step on a 2-core CPU; with huge pages ~2,000 faults,
  0.5 s, and the step 15 % faster (5.6 -> 4.8 s). malloc reads the tunable once at process
  start, hence the re-exec. Unknown to older glibc (ignored) and harmless where transparent huge
  pages are off (/sys/kernel/mm/transparent_hugepage/enabled = never).
  """
  if not sys.platform.startswith('linux') or environ.get('SSL_JAX_HUGEPAGES', '1') == '0':
    return None
  tunables = environ.get('GLIBC_TUNABLES', '')
  if 'glibc.malloc.hugetlb' in tunables:
    return None
  env = dict(environ)
  env['GLIBC_TUNABLES'] = f'{tunables}:{HUGEPAGE_TUNABLE}' if tunables else HUGEPAGE_TUNABLE
  return env


def reexec_with_hugepages() -> None:
  """Replaces this process (same pid, same command line) by one with :func:`hugepage_env`."""
  env = hugepage_env(os.environ)
  if env is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


EIGEN_DOTS_FLAG = '--xla_cpu_experimental_ynn_fusion_type='


def cpu_dots_xla_flags(config, xla_flags: str) -> str | None:
  """The ``XLA_FLAGS`` that ``config.model.cpu_dots`` asks for, or None to leave them as they are.

  ``'eigen'`` (and ``'auto'`` with a ViT backbone) adds ``--xla_cpu_experimental_ynn_fusion_type=``:
  XLA:CPU then runs dots through Eigen instead of jaxlib 0.10's default YNNPACK fusions. Measured
  on a 2-core CPU (README, performance): the ViT-Tiny SimCLR step 10.5 -> 8.2-9.0 s at batch 128,
  and the ViT rows of ``benchmarks/throughput.py`` 0.88-1.10x -> 1.05-1.12x of lightly; the
  ResNet-18 SimCLR step gained nothing (two batch-128 rounds within the noise, one batch-256 run
  slower: 9.3 -> 8.5-8.8 img/s), hence ``'auto'``. The flag is read once,
  when JAX creates its CPU backend, so it is one setting per process and only takes effect when
  set before the first JAX computation (as :func:`_main` does). It only concerns the CPU backend;
  an ``XLA_FLAGS`` that already names ``ynn_fusion_type`` is left alone."""
  from ssl_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  choice = config.model.get('cpu_dots', 'auto')
  config_lib._choice(choice, 'model.cpu_dots', config_lib.CPU_DOTS)  # pylint: disable=protected-access
  eigen = choice == 'eigen' or (choice == 'auto'
                                and str(config.model.backbone).startswith('vit'))
  return eigen_dots_xla_flags(xla_flags) if eigen else None


def eigen_dots_xla_flags(xla_flags: str) -> str | None:
  """``xla_flags`` plus :data:`EIGEN_DOTS_FLAG`, or None when they already name
  ``ynn_fusion_type`` (the user's choice stands)."""
  if 'ynn_fusion_type' in xla_flags:
    return None
  return f'{xla_flags} {EIGEN_DOTS_FLAG}'.strip()


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


def _parse_flags(argv):
  """absl flag parsing; a bad ``--config.*`` override (unknown or misspelled field, wrong type)
  becomes a one-line flags error instead of a traceback from inside ml_collections."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    msg = str(e)
    if 'Traceback (most recent call last)' in msg:  # an exception inside get_config(): its last line
      lines = [l.strip() for l in msg.splitlines() if l.strip()]
      msg = f'{lines[0]} {lines[-1]}'
    sys.stderr.write(f'FATAL Flags parsing error: {msg}\n'
                     'Pass --helpshort or --helpfull to see help on flags.\n')
    sys.exit(1)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    msg = ' '.join(str(e).split())
    guess = re.search(r'Did you mean "([\w.]+)" instead of "([\w.]+)"', msg)
    name = re.search(r"'(\w+)", msg)
    wrong = guess.group(2) if guess else name.group(1) if name else None
    if wrong and isinstance(e, (AttributeError, KeyError)):
      culprit = [a.split('=')[0] for a in argv[1:]
                 if re.match(rf'--config(\.\w+)*\.{re.escape(wrong)}(\.|=|$)', a)]
      where = culprit[0] if culprit else '--config'
      hint = f' (did you mean {guess.group(1)!r}?)' if guess else ''
      msg = f'{where}: unknown config field {wrong!r}{hint}'
    sys.stderr.write(f'FATAL Flags parsing error: {msg}\n')
    sys.exit(1)


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


class _QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of Orbax and grain (dozens of lines per checkpoint) around the
  progress bar; their warnings and errors, and all of ssl_jax's own logging, still show."""

  _NOISY = (f'{os.sep}orbax{os.sep}', f'{os.sep}grain{os.sep}')

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or not any(n in record.pathname
                                                             for n in self._NOISY)


def main(argv):
  logging.get_absl_handler().addFilter(_QuietLibraries())
  try:
    _main(argv)
  except Exception as e:  # pylint: disable=broad-except
    if not _is_user_error(e):
      raise
    logging.debug('full traceback', exc_info=True)
    print(f'ssl_jax: error: {type(e).__name__}: {e}', file=sys.stderr)
    sys.exit(1)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/simclr.py:builtin')
  try:
    config.keys()  # a config file that failed to load raises here, not deep inside the trainer
  except OSError as e:
    raise ValueError(' '.join(str(e).split())) from None
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required')
  xla_flags = cpu_dots_xla_flags(config, os.environ.get('XLA_FLAGS', ''))
  if xla_flags is not None:          # before the first JAX computation creates the backend
    os.environ['XLA_FLAGS'] = xla_flags
    logging.info('model.cpu_dots: XLA_FLAGS=%s', xla_flags)
  from ssl_jax.train import sharding  # pylint: disable=g-import-not-at-top
  sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
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
  logging.info('%s', result)
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  reexec_with_hugepages()
  app.run(main, flags_parser=_parse_flags)
