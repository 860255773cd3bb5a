"""Test-wide setup, before JAX is imported.

* 8 simulated CPU devices, so 1-device vs 8-device parity runs in one process; tests that want one
  device build a 1-device mesh.
* XLA:CPU backend optimisation off (compiles ~1.5x faster; the models are tiny). Results differ
  from optimised code by float rounding only (another summation order): the 1-vs-8-device tests
  hold at every level since BatchNorm computes a two-pass variance (ssl_jax/models/norm.py).
* A JAX persistent compilation cache in a fresh temporary directory for this session (inherited by
  the subprocesses tests start): tests that build the same tiny experiment again (resume,
  checkpoint and engine tests) load its compiled step instead of compiling it again.
* ``-n 2 --dist loadfile`` (the README's command) starts the slowest files first and hands out the
  round-trip configs one test at a time (pytest_xdist_make_scheduler below).
"""
import atexit
import os
import shutil
import tempfile

import pytest

# XLA:CPU's LLVM optimisation is most of the compile time of the tiny test models and buys them
# little; every test process (and subprocess, via helpers.xla_flags) compiles without it.
FAST_COMPILE = '--xla_backend_optimization_level=0'
os.environ.setdefault('XLA_FLAGS', f'--xla_force_host_platform_device_count=8 {FAST_COMPILE}')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='ssl_jax_test_jax_cache_')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
if os.environ.get('PYTEST_XDIST_WORKER'):   # pytest -n N: one cache per worker, below the shared one
  os.environ['JAX_COMPILATION_CACHE_DIR'] = os.path.join(os.environ['JAX_COMPILATION_CACHE_DIR'],
                                                         os.environ['PYTEST_XDIST_WORKER'])

# pytest-xdist's --dist loadfile, ordered for two workers that should finish together: the files
# that take minutes start first, and the round-trip configs (one independent ~1-6 min test each,
# no shared fixture) go one by one instead of as one file of ~45 min on a single worker. Seconds
# measured on the 2-core CI machine (last session); a file not listed keeps xdist's order after
# these, so new test files need no entry.
SLOW_FILES_FIRST = ('tests/train/test_multihost.py', 'tests/train/test_resume.py',
                    'tests/train/test_gcs.py', 'tests/test_notebook.py')
ONE_BY_ONE_FILES = ('tests/test_roundtrip.py',)


@pytest.hookimpl(optionalhook=True)   # a hook of pytest-xdist, which may be absent
def pytest_xdist_make_scheduler(config, log):
  """``--dist loadfile`` with the order above; other --dist modes are xdist's own."""
  if config.getvalue('dist') != 'loadfile':
    return None
  from xdist.scheduler import LoadFileScheduling  # pylint: disable=g-import-not-at-top

  class SlowFirstFileScheduling(LoadFileScheduling):

    def _split_scope(self, nodeid):
      path = nodeid.split('::', 1)[0]
      return nodeid if path in ONE_BY_ONE_FILES else path

    def _assign_work_unit(self, node):
      def rank(scope):
        path = scope.split('::', 1)[0]
        if path in SLOW_FILES_FIRST:
          return SLOW_FILES_FIRST.index(path)
        return len(SLOW_FILES_FIRST) + (path not in ONE_BY_ONE_FILES)
      self.workqueue.move_to_end(min(self.workqueue, key=rank), last=False)
      super()._assign_work_unit(node)

  return SlowFirstFileScheduling(config, log)
