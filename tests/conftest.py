"""Test-wide setup, before JAX is imported.

* 8 simulated CPU devices, so 1-device vs 8-device parity runs in one process; tests that want one
  device build a 1-device mesh.
* XLA:CPU backend optimisation off (compiles ~1.5x faster; the models are tiny). Results differ
  from optimised code by float rounding only (another summation order): the 1-vs-8-device tests
  hold at every level since BatchNorm computes a two-pass variance (ssl_jax/models/norm.py).
* A JAX persistent compilation cache in a fresh temporary directory for this session (inherited by
  the subprocesses tests start): tests that build the same tiny experiment again (resume,
  checkpoint and engine tests) load its compiled step instead of compiling it again.
"""
import atexit
import os
import shutil
import tempfile

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
