"""Process setup for a run: what has to happen before the first JAX computation, once per process.

* Huge pages: :func:`reexec_with_hugepages` re-executes the process with glibc's malloc on
  transparent huge pages (``GLIBC_TUNABLES``), read once at process start.
* XLA flags: :func:`cpu_dots_xla_flags` turns ``config.model.cpu_dots`` into ``XLA_FLAGS``, read
  once when JAX creates its CPU backend.
* Multi-process: :func:`initialize_distributed` starts ``jax.distributed`` (explicit, TPU pod or
  Slurm), which must come before any other JAX call.
* The command line's own process setup: :func:`parse_flags` (one-line flag errors) and
  :class:`QuietLibraries` (less library chatter in the log).

:func:`setup` does the two config-dependent steps in order; ``python -m ssl_jax.main`` and the
benchmarks call these instead of repeating them. The measurements behind the huge-page and
Eigen-dot settings: docs/performance.md.
"""
from __future__ import annotations

import logging as std_logging
import os
import re
import sys

from absl import flags, logging

HUGEPAGE_TUNABLE = 'glibc.malloc.hugetlb=1'


# The CPU features XLA:CPU's and oneDNN's kernels pick their code paths by (benchmarks name them).
CPU_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_tile',
             'amx_bf16')


def cpu_info(cpuinfo: str | None = None) -> dict:
  """The CPU's model name, core count and which of ``CPU_FLAGS`` it has (Linux /proc/cpuinfo;
  ``cpuinfo`` is its text, for tests). Every benchmark table names its machine with this."""
  import platform  # pylint: disable=g-import-not-at-top
  if cpuinfo is None:
    try:
      with open('/proc/cpuinfo') as f:
        cpuinfo = f.read()
    except OSError:
      cpuinfo = ''
  model, have = '', set()
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(':')
    if key.strip() == 'model name' and not model:
      model = value.strip()
    elif key.strip() == 'flags' and not have:
      have = set(value.split())
  return {'model': model or platform.processor() or 'unknown CPU', 'cores': os.cpu_count(),
          'flags': [f for f in CPU_FLAGS if f in have]}


def cpu_description(cpuinfo: str | None = None) -> str:
  """One line for a benchmark table: 'MODEL x CORES (flag flag ...)'."""
  info = cpu_info(cpuinfo)
  return f"{info['model']} x{info['cores']} ({' '.join(info['flags']) or 'no AVX2'})"


def hugepage_env(environ) -> dict | None:
  """The environment to re-execute this process with so that glibc's malloc backs large blocks
  with transparent huge pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, glibc >= 2.35), or
  None when that is already set, opted out of (``SSL_JAX_HUGEPAGES=0``) or not Linux.

  Why: XLA:CPU allocates a step's temporary buffers afresh each step, so every 4 KiB page of
  them is faulted in again; with huge pages a ViT-Tiny SimCLR step spent a fifth of the kernel
  time and ran 15 % faster (docs/performance.md, "Huge pages"). malloc reads the tunable once at
  process start, hence the re-exec. Unknown to older glibc (ignored) and harmless where
  transparent huge pages are off (/sys/kernel/mm/transparent_hugepage/enabled = never).
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
  XLA:CPU then runs dots through Eigen instead of jaxlib 0.10's default YNNPACK fusions, which
  made the ViT steps faster and the ResNet-18 step no faster (docs/performance.md, "XLA:CPU dot
  fusions"), hence ``'auto'``. The flag is read once, when JAX creates its CPU backend, so it is
  one setting per process and only takes effect when set before the first JAX computation (as
  :func:`setup` does). It only concerns the CPU backend; an ``XLA_FLAGS`` that already names
  ``ynn_fusion_type`` is left alone."""
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


def set_cpu_dots(config) -> None:
  """Puts :func:`cpu_dots_xla_flags` into ``os.environ['XLA_FLAGS']`` (must run before the first
  JAX computation creates the backend)."""
  xla_flags = cpu_dots_xla_flags(config, os.environ.get('XLA_FLAGS', ''))
  if xla_flags is not None:
    os.environ['XLA_FLAGS'] = xla_flags
    logging.info('model.cpu_dots: XLA_FLAGS=%s', xla_flags)


def initialize_distributed(coordinator_address: str = '', num_processes: int = 0,
                           process_id: int = -1) -> bool:
  """Starts JAX's multi-controller runtime when this is one process of a multi-process job.

  * explicit: ``coordinator_address`` ('host:port') with ``num_processes`` and ``process_id``
    (what launch/local.sh and the multi-host test pass);
  * auto-detected: Cloud TPU pod slices (several workers) and Slurm jobs with more than one task,
    where ``jax.distributed.initialize()`` reads the cluster from the environment;
  * otherwise a single process: nothing to do.

  Must run before any other JAX call. Returns True when the runtime was initialised.
  """
  import jax  # pylint: disable=g-import-not-at-top  # after set_cpu_dots, as the first JAX import
  if coordinator_address:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f'--coordinator_address={coordinator_address} needs --num_processes >= 1 '
                       f'and 0 <= --process_id < num_processes (got {num_processes}, {process_id})')
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    return True
  slurm_tasks = int(os.environ.get('SLURM_NTASKS', '1') or 1)
  tpu_workers = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if slurm_tasks > 1 or ',' in tpu_workers:
    jax.distributed.initialize()
    return True
  return False


def setup(config, coordinator_address: str = '', num_processes: int = 0,
          process_id: int = -1) -> None:
  """A run's process setup, before its first JAX computation: the ``XLA_FLAGS`` of
  ``config.model.cpu_dots``, then ``jax.distributed`` (:func:`initialize_distributed`)."""
  set_cpu_dots(config)
  initialize_distributed(coordinator_address, num_processes, process_id)


def parse_flags(argv):
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


class QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of Orbax and grain (dozens of lines per checkpoint) around the
  progress bar, and JAX's backend probing ("Unable to initialize backend 'tpu'" on every CPU or
  GPU machine); their warnings and errors, and all of ssl_jax's own logging, still show."""

  _NOISY = (f'{os.sep}orbax{os.sep}', f'{os.sep}grain{os.sep}', f'{os.sep}xla_bridge.py')

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or not any(n in record.pathname
                                                             for n in self._NOISY)
