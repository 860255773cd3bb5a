"""Two local processes (jax.distributed on 127.0.0.1, CPU collectives) train exactly like one
process with the same global batch and device count; a SIGTERM to one of them stops both after the
same step (exit 143), and the resumed run equals an uninterrupted one."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from configs import simclr
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 3
OVERRIDES = helpers.TINY_CLI + [
    f'--config.train.steps={STEPS}', '--config.train.log_every=1',
    f'--config.train.checkpoint_every={STEPS}', '--config.optim.warmup_steps=1',
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


PREEMPT_STEPS = 12
PREEMPT_OVERRIDES = [o for o in OVERRIDES if 'train.steps' not in o and 'checkpoint_every' not in o]
PREEMPT_OVERRIDES += [f'--config.train.steps={PREEMPT_STEPS}', '--config.train.checkpoint_every=2',
                      '--config.train.preemption_sync_every=1', '--config.data.name=digits']


def _start_pair(workdir, cache):
  """Two processes (one CPU device each) of the same run, sharing a compilation cache."""
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS=helpers.xla_flags(1), JAX_PLATFORMS='cpu', PYTHONPATH=ROOT,
             JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  return [subprocess.Popen(
      [sys.executable, '-m', 'ssl_jax.main', '--config=configs/simclr.py:builtin',
       f'--workdir={workdir}', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
       f'--process_id={i}', *PREEMPT_OVERRIDES], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]


def _finish(procs):
  outs = [p.communicate(timeout=600)[0] for p in procs]
  return [p.returncode for p in procs], outs


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
  from tests.train.test_resume import _committed, _state_hash  # pylint: disable=g-import-not-at-top
  cache, ref, run = str(tmp_path / 'cache'), str(tmp_path / 'ref'), str(tmp_path / 'run')
  rcs, outs = _finish(_start_pair(ref, cache))
  assert rcs == [0, 0], outs[0][-3000:] + outs[1][-3000:]

  procs = _start_pair(run, cache)
  t0 = time.time()
  while not _committed(run) and time.time() - t0 < 600 and procs[1].poll() is None:
    time.sleep(0.01)
  assert _committed(run), 'no checkpoint was written'
  procs[1].send_signal(signal.SIGTERM)   # process 0 is not signalled
  rcs, outs = _finish(procs)
  assert rcs == [143, 143], outs[0][-3000:] + outs[1][-3000:]
  stops = [int(re.search(r'checkpoint saved at step (\d+)', o).group(1)) for o in outs]
  assert stops[0] == stops[1] < PREEMPT_STEPS and _committed(run)[-1] == stops[0], stops
  assert 'Another process was asked to stop' in outs[0]

  rcs, outs = _finish(_start_pair(run, cache))
  assert rcs == [0, 0], outs[0][-3000:] + outs[1][-3000:]
  summary = json.load(open(os.path.join(run, 'summary.json')))
  assert summary['resumed_from_step'] == stops[0]
  assert _state_hash(run)[1] == _state_hash(ref)[1], 'the resumed run differs from the reference'
  assert summary['final_loss'] == json.load(open(os.path.join(ref, 'summary.json')))['final_loss']
