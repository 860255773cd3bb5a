"""Test-wide setup, before JAX is imported.

* 8 simulated CPU devices, so 1-device vs 8-device parity runs in one process; tests that want one
  device build a 1-device mesh.
* XLA:CPU backend optimisation and the MLIR fusion emitters off (compiles ~3x faster together;
  the models are tiny). Results differ from optimised code by float rounding only (another
  summation order): the 1-vs-8-device tests hold at every level since BatchNorm computes a
  two-pass variance (ssl_jax/models/norm.py).
* No JAX persistent compilation cache in the test processes: writing an entry serialises the
  XLA:CPU executable, and that segfaulted mid-suite (jax 0.10.2; a train step of test_instdis
  here, of test_lejepa in CI), after which pytest-xdist waited forever for the lost worker. Only
  the tests that restart the same training subprocess (resume, multi-host, gs://) give their
  subprocesses a cache of their own.
* ``-n 2 --dist loadfile`` (the README's command) starts the slowest files first and hands out the
  round-trip configs one test at a time (pytest_xdist_make_scheduler below).
* Two tiers. The default one (the README's test command, what CI runs) keeps every behaviour
  checked once; tests marked ``@pytest.mark.slow`` repeat a checked path for more configs (every
  config's full pretrain -> eval -> export round trip, the 8-device half of the per-example
  pretext losses, the width-64 and ResNet-50 model checks, the image-folder runs).
  ``SSL_JAX_SLOW_TESTS=1`` runs them too (docs/index.md).
"""
import os

import pytest

# XLA:CPU's LLVM optimisation is most of the compile time of the tiny test models and buys them
# little; every test process (and subprocess, via helpers.xla_flags) compiles without it, and
# with XLA's older elemental emitter for fusions instead of the MLIR fusion emitters: a tiny train
# step compiles in 4-6 s instead of 10-11 s, an eager ViT init + apply in 3.1-3.9 instead of
# 3.7-4.7 s (docs/performance.md, "Compile time").
FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'
os.environ.setdefault('XLA_FLAGS', f'--xla_force_host_platform_device_count=8 {FAST_COMPILE}')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.pop('JAX_COMPILATION_CACHE_DIR', None)   # see the docstring

# pytest-xdist's --dist loadfile, ordered for two workers that should finish together: the files
# that take minutes start first, and the round-trip configs (one independent ~1-6 min test each,
# no shared fixture) go one by one instead of as one file of ~45 min on a single worker. Seconds
# measured on the 2-core CI machine (last session); a file not listed keeps xdist's order after
# these, so new test files need no entry.
SLOW_FILES_FIRST = ('tests/train/test_multihost.py', 'tests/train/test_resume.py',
                    'tests/train/test_gcs.py', 'tests/test_notebook.py', 'tests/test_docs.py')
ONE_BY_ONE_FILES = ('tests/test_roundtrip.py',)


def slow_tests_enabled() -> bool:
  return os.environ.get('SSL_JAX_SLOW_TESTS', '') not in ('', '0')


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: the full tier only (set SSL_JAX_SLOW_TESTS=1)')


def pytest_collection_modifyitems(config, items):
  del config
  if slow_tests_enabled():
    return
  skip = pytest.mark.skip(reason='full tier: set SSL_JAX_SLOW_TESTS=1')
  for item in items:
    if 'slow' in item.keywords:
      item.add_marker(skip)


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

    def remove_node(self, node):
      """A crashed worker's test is reported failed once and is not re-queued with the rest of
      its file. With xdist 3.8's own remove_node a toy suite (one test that SIGSEGVs among 10)
      hung in both tries; with this one it ends with 1 failed, 10 passed. Not a test of the suite:
      run from inside this suite after a TensorBoard writer test, the toy still hung."""
      workload = self.assigned_work.pop(node)
      pending = [(scope, nodeid) for scope, unit in workload.items()
                 for nodeid, done in unit.items() if not done]
      if not pending:
        return None
      scope, crashitem = pending[0]
      workload[scope][crashitem] = True
      for scope, unit in workload.items():
        if not all(unit.values()):
          self.workqueue[scope] = unit
      for other in self.assigned_work:
        self._reschedule(other)
      return crashitem

  return SlowFirstFileScheduling(config, log)
