"""--mode=export after a two-process FSDP run (jax.distributed on 127.0.0.1): parameters sharded
over both processes are gathered, every process takes part, the export loads in one process and
holds the checkpoint's parameters."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 2
OVERRIDES = helpers.TINY_CLI + [
    f'--config.train.steps={STEPS}', '--config.train.log_every=1',
    f'--config.train.checkpoint_every={STEPS}', '--config.optim.warmup_steps=1',
    # FSDP over all 8 devices of both processes: every big-enough leaf is split across them.
    "--config.mesh.shape=(1,8)", "--config.mesh.axes=('data','fsdp')",
    '--config.mesh.fsdp_min_size=16', '--config.export.timm=False',
]


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _two_processes(workdir, *args):
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS=helpers.xla_flags(4), JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'ssl_jax.main', '--config=configs/simclr.py:builtin',
       f'--workdir={workdir}', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
       f'--process_id={i}', *OVERRIDES, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=1500)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]


def _checkpoint_backbone(workdir, step):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  with ocp.PyTreeCheckpointer() as ckptr:
    meta = ckptr.metadata(path).item_metadata.tree
    args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
    return ckptr.restore(path, restore_args=args)['params']['backbone']


def test_export_after_two_process_fsdp_run(tmp_path):
  workdir = str(tmp_path / 'run')
  _two_processes(workdir)
  _two_processes(workdir, '--mode=export')
  result = json.load(open(os.path.join(workdir, 'export', 'export.json')))
  assert result['step'] == STEPS
  from ssl_jax.export import load_encoder  # pylint: disable=g-import-not-at-top
  _, variables = load_encoder(result['encoder'])
  want = _checkpoint_backbone(workdir, STEPS)
  got = jax.tree_util.tree_leaves(variables['params'])
  assert len(got) == len(jax.tree_util.tree_leaves(want)) > 5
  for a, b in zip(got, jax.tree_util.tree_leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
