"""Scalars go to TensorBoard and, when config.train.wandb_project is set, to W&B (offline here)."""
import glob
import os
import subprocess
import sys

import pytest

from ssl_jax import config as config_lib
from ssl_jax.train import summaries


def _config(project='', mode='offline'):
  c = config_lib.base_config()
  c.train.wandb_project = project
  c.train.wandb_mode = mode
  return c


def test_tensorboard_only_by_default(tmp_path):
  with summaries.Summaries(str(tmp_path), _config()) as w:
    w.add_scalar('train/loss', 1.0, 1)
  assert glob.glob(str(tmp_path / 'tensorboard' / 'events.out.tfevents.*'))
  assert not os.path.exists(tmp_path / 'wandb')


def test_wandb_offline_run_has_the_scalars_and_one_id_per_workdir(tmp_path, monkeypatch):
  wandb = pytest.importorskip('wandb')
  monkeypatch.setenv('WANDB_SILENT', 'true')
  try:
    for step in (1, 2):   # two sessions of one run (a resume): the same W&B run id
      with summaries.Summaries(str(tmp_path), _config('ssl_jax_tests')) as w:
        w.add_scalar('train/ssl_jax_test_metric', 0.5 * step, step)
  finally:
    wandb.teardown()   # stops its service process, which outlives the run in this worker
  run_id = summaries.wandb_run_id(str(tmp_path))
  # offline-run-TIME-ID, and -ID-1 when both sessions started within the same second.
  runs = glob.glob(str(tmp_path / 'wandb' / f'offline-run-*-{run_id}')) + glob.glob(
      str(tmp_path / 'wandb' / f'offline-run-*-{run_id}-[0-9]*'))
  assert len(runs) == 2, os.listdir(tmp_path / 'wandb')
  for run in runs:
    (log,) = glob.glob(os.path.join(run, f'run-{run_id}.wandb'))
    assert b'train/ssl_jax_test_metric' in open(log, 'rb').read()
  assert glob.glob(str(tmp_path / 'tensorboard' / 'events.out.tfevents.*'))


def test_bad_wandb_mode_is_refused():
  c = _config('p', mode='ofline')
  with pytest.raises(ValueError, match="train.wandb_mode='ofline'.*did you mean 'offline'"):
    config_lib.validate(c)


def test_tensorboard_writer_does_not_import_torch(tmp_path):
  # A fresh process (the test process has torch loaded for the timm tests): the writer comes
  # without torch, torch still imports afterwards, and the scalars reach the event file.
  code = ("import sys\n"
          "from ssl_jax.train import summaries\n"
          f"s = summaries.Summaries({str(tmp_path)!r})\n"
          "s.add_scalar('train/loss', 1.5, 3)\n"
          "print('torch loaded:', 'torch' in sys.modules)\n"
          "import torch\n"
          "s.add_scalar('train/loss', torch.tensor(2.5), 4)\n"
          "s.close()\n")
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert 'torch loaded: False' in out.stdout, out.stdout + out.stderr
  assert _scalars(tmp_path / 'tensorboard', 'train/loss') == [(3, 1.5), (4, 2.5)]


def _scalars(folder, tag):
  """(step, value) of ``tag`` in the TFRecord event files of ``folder`` (each record: u64 length,
  u32 crc, the Event proto, u32 crc)."""
  import struct  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  found = []
  for path in sorted(glob.glob(os.path.join(folder, 'events.out.tfevents.*'))):
    data, pos = open(path, 'rb').read(), 0
    while pos < len(data):
      (length,) = struct.unpack('<Q', data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      found += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
  return found
