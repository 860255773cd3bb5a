"""gs:// workdirs and data against a real GCS API server on 127.0.0.1 (tests/gcs_emulator.py).

The acceptance run: ``python -m ssl_jax.main --workdir=gs://bucket/run`` is SIGKILLed after its
first committed checkpoint, resumed to the end, evaluated (--mode=eval) and exported
(--mode=export), and nothing is written to local disk under a 'gs:' name (what
``os.path.abspath('gs://bucket/run')`` used to create in the working directory).
"""
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests import gcs_emulator, helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 6
OVERRIDES = helpers.TINY_CLI + [
    f'--config.train.steps={STEPS}', '--config.train.checkpoint_every=2',
    '--config.train.keep_checkpoints=2', '--config.train.log_every=1',
    '--config.optim.warmup_steps=2', '--config.data.name=digits', '--config.eval.linear=False',
    '--config.export.timm=False',
]


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  """The emulator's environment, also set in this process (gcsfs reads it at each call)."""
  tmp = str(tmp_path_factory.mktemp('gcs'))
  with gcs_emulator.emulator_env(tmp) as env:
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
      mp.setenv(k, v)
    import gcsfs  # pylint: disable=g-import-not-at-top
    gcsfs.GCSFileSystem.clear_instance_cache()
    yield env
    gcsfs.GCSFileSystem.clear_instance_cache()
    mp.undo()


def _ls(url):
  """Names directly below ``url`` (a fresh listing, not gcsfs's cache)."""
  import gcsfs  # pylint: disable=g-import-not-at-top
  fs = gcsfs.GCSFileSystem()
  fs.invalidate_cache()
  try:
    return sorted(p.rstrip('/').rsplit('/', 1)[-1] for p in fs.ls(url))
  except FileNotFoundError:
    return []


def _read_json(url):
  from ssl_jax import paths  # pylint: disable=g-import-not-at-top
  import gcsfs  # pylint: disable=g-import-not-at-top
  gcsfs.GCSFileSystem().invalidate_cache()
  return paths.read_json(url)


def _committed(run):
  """Steps whose checkpoint Orbax finished: on a bucket it writes the step folder in place and
  commits it with a marker file (there is no rename)."""
  steps = [int(n) for n in _ls(f'{run}/checkpoints') if n.isdigit()]
  return [s for s in steps if 'commit_success.txt' in _ls(f'{run}/checkpoints/{s}')]


def test_folder_source_reads_a_bucket(gcs):
  from ssl_jax import paths  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import folder  # pylint: disable=g-import-not-at-top
  root = 'gs://bucket/images'
  rng = np.random.default_rng(0)
  want = {}
  for cls in ('cat', 'dog'):
    for i in range(3):
      img = rng.integers(0, 255, (8, 8, 3), np.uint8)
      p = paths.as_path(f'{root}/train/{cls}/{i}.png')
      buf = io.BytesIO()
      Image.fromarray(img).save(buf, format='PNG')
      p.write_bytes(buf.getvalue())
      want[str(p)] = img
  folder.list_folder.cache_clear()
  src = folder.FolderSource(root, 'train')
  assert src.classes == ('cat', 'dog')
  assert len(src) == 6 and list(src.labels) == [0, 0, 0, 1, 1, 1]
  for i in range(len(src)):
    assert src.paths[i].startswith('gs://bucket/images/train/')
    np.testing.assert_array_equal(src[i]['image'], want[src.paths[i]])


def _env(gcs, cache, tmpdir):
  env = dict(os.environ)
  env.update(gcs)
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=helpers.xla_flags(1), PYTHONPATH=ROOT,
             JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0', TMPDIR=tmpdir)
  return env


def test_gs_workdir_killed_resumed_evaluated_exported(gcs, tmp_path):
  run = 'gs://bucket/run'
  cwd, tmpdir = tmp_path / 'cwd', tmp_path / 'tmp'
  cwd.mkdir()
  tmpdir.mkdir()
  env = _env(gcs, str(tmp_path / 'jax_cache'), str(tmpdir))

  def main(*args, log_name):
    cmd = [sys.executable, '-m', 'ssl_jax.main',
           f'--config={os.path.join(ROOT, "configs", "simclr.py")}:builtin', f'--workdir={run}',
           *OVERRIDES, *args]
    log = open(tmp_path / log_name, 'wb')
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT), log

  def text(name):
    return open(tmp_path / name, errors='replace').read()[-4000:]

  # 1. Killed after its first committed checkpoint (or at the latest one it reached).
  proc, log = main(log_name='kill.log')
  t0 = time.time()
  while not _committed(run):
    assert proc.poll() is None, 'the run ended before its first checkpoint:\n' + text('kill.log')
    assert time.time() - t0 < 900, 'no checkpoint on gs:// after 900 s:\n' + text('kill.log')
    time.sleep(0.5)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait(timeout=60) == -signal.SIGKILL
  log.close()
  assert _committed(run)[-1] < STEPS, 'the run finished before it could be killed'

  # 2. Resumed to the end.
  proc, log = main(log_name='resume.log')
  assert proc.wait(timeout=900) == 0, text('resume.log')
  log.close()
  summary = _read_json(f'{run}/summary.json')
  assert 0 < summary['resumed_from_step'] < STEPS, summary
  assert np.isfinite(summary['final_loss'])
  history = _read_json(f'{run}/history.json')
  assert [h['step'] for h in history if 'loss' in h] == list(range(1, STEPS + 1)), history
  assert _committed(run)[-1] == STEPS
  assert 'tensorboard' in _ls(run)

  # 3. Evaluated, 4. exported.
  proc, log = main('--mode=eval', log_name='eval.log')
  assert proc.wait(timeout=900) == 0, text('eval.log')
  log.close()
  evaluation = _read_json(f'{run}/eval.json')
  assert evaluation['step'] == STEPS and 0 <= evaluation['knn_top1'] <= 1
  proc, log = main('--mode=export', log_name='export.log')
  assert proc.wait(timeout=900) == 0, text('export.log')
  log.close()
  exported = _read_json(f'{run}/export/export.json')
  assert exported['step'] == STEPS and exported['encoder'] == f'{run}/export/encoder'
  assert _ls(f'{run}/export') == ['encoder', 'export.json']
  from ssl_jax.export import load_encoder  # pylint: disable=g-import-not-at-top
  module, variables = load_encoder(exported['encoder'])
  feats = module.apply(variables, np.zeros((2, 16, 16, 3), np.float32), train=False)
  assert feats.shape[0] == 2 and np.all(np.isfinite(feats))

  # Nothing local under a 'gs:' name: not in the working directory, the repository, TMPDIR or
  # this test's own folder.
  assert not gcs_emulator.gs_dirs_under(cwd, tmpdir, tmp_path, ROOT)
