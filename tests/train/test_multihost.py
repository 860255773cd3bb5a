"""Two local processes (jax.distributed on 127.0.0.1, CPU collectives) train exactly like one
process with the same global batch and device count."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

from configs import simclr
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 3
OVERRIDES = [
    '--config.model.width=4', '--config.model.stage_sizes=(1,1,1,1)',
    '--config.data.image_size=16', '--config.data.batch_size=16',
    f'--config.train.steps={STEPS}', '--config.train.log_every=1',
    f'--config.train.checkpoint_every={STEPS}', '--config.train.final_eval=False',
    '--config.train.progress_bar=False', '--config.method.proj_hidden_dim=16',
    '--config.method.proj_dim=8', '--config.optim.warmup_steps=1',
]


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS=helpers.xla_flags(4),
             JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'ssl_jax.main', '--config=configs/simclr.py:builtin',
       f'--workdir={tmp_path}', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
       f'--process_id={i}', *OVERRIDES], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  summary = json.load(open(tmp_path / 'summary.json'))
  assert summary['devices'] == 8
  multi = [h['loss'] for h in json.load(open(tmp_path / 'history.json')) if 'loss' in h]

  c = helpers.tiny(simclr.get_config('builtin'), steps=STEPS)
  c.method.proj_hidden_dim, c.method.proj_dim = 16, 8
  _, single = helpers.run_steps(c, 8, STEPS)
  np.testing.assert_allclose(multi, [h['loss'] for h in single], rtol=1e-5)
