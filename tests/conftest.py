"""Test-wide setup, before JAX is imported.

* 8 simulated CPU devices, so 1-device vs 8-device parity runs in one process; tests that want one
  device build a 1-device mesh.
* XLA:CPU backend optimisation at level 1 (compiles ~1.4x faster than the default 3; the models
  are tiny). Not level 0: on an AVX2-only AMD EPYC, XLA:CPU at level 0 computed a wrong gradient
  in the 1-device SwAV step (grad norm 20.47 where levels 1-3 and the 8-device program give 20.71;
  every piece of the step compiled on its own was right), which failed the 1-vs-8-device tests.
* A JAX persistent compilation cache in a fresh temporary directory for this session (inherited by
  the subprocesses tests start): tests that build the same tiny experiment again (resume,
  checkpoint and engine tests) load its compiled step instead of compiling it again.
"""
import atexit
import os
import shutil
import tempfile

# XLA:CPU's LLVM optimisation is most of the compile time of the tiny test models and buys them
# little; every test process (and subprocess, via helpers.xla_flags) compiles at level 1 (see above
# for why not 0).
FAST_COMPILE = '--xla_backend_optimization_level=1'
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
