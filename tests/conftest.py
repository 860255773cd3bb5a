"""Test-wide setup, before JAX is imported.

* 8 simulated CPU devices, so 1-device vs 8-device parity runs in one process; tests that want one
  device build a 1-device mesh.
* A JAX persistent compilation cache in a fresh temporary directory for this session (inherited by
  the subprocesses tests start): tests that build the same tiny experiment again (resume,
  checkpoint and engine tests) load its compiled step instead of compiling it again.
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='ssl_jax_test_jax_cache_')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
