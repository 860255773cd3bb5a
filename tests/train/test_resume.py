"""Exact resume of a real training process killed at random moments (SIGKILL, SIGTERM).

One uninterrupted run of ``python -m ssl_jax.main`` is compared with a run that is SIGKILLed after
a random committed checkpoint, SIGKILLed again while Orbax is writing a checkpoint (its temporary
directory exists), stopped with SIGTERM (a preemption: it must write a final checkpoint and exit
with status 143) and finally run to the end. The final train states must be bitwise identical
(same CPU device count), which covers data order (grain iterator state), random keys (fold_in of
the step), optimizer state and method buffers.

Both runs share a JAX persistent compilation cache, so only the first process compiles.
"""
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 20
OVERRIDES = helpers.TINY_CLI + [
    f'--config.train.steps={STEPS}', '--config.train.checkpoint_every=2',
    '--config.train.keep_checkpoints=2', '--config.train.log_every=1',
    '--config.optim.warmup_steps=2', '--config.data.name=digits',
]


def _env(cache_dir):
  env = dict(os.environ)
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=helpers.xla_flags(1),
             JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0', PYTHONPATH=ROOT)
  return env


def _start(workdir, cache_dir, log):
  cmd = [sys.executable, '-m', 'ssl_jax.main', '--config=configs/simclr.py:builtin',
         f'--workdir={workdir}'] + OVERRIDES
  return subprocess.Popen(cmd, cwd=ROOT, env=_env(cache_dir), stdout=log, stderr=subprocess.STDOUT)


def _committed(workdir):
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _saving(workdir):
  d = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(d) and any('tmp' in n for n in os.listdir(d))


def _wait_for(proc, cond, timeout=120):
  t0 = time.time()
  while time.time() - t0 < timeout:
    if cond():
      return True
    if proc.poll() is not None:
      return False
    time.sleep(0.01)
  raise TimeoutError('training subprocess made no progress')


def _state_hash(workdir):
  """sha256 over every leaf of the final checkpoint's train state, plus its step."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  step = _committed(workdir)[-1]
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  with ocp.PyTreeCheckpointer() as ckptr:
    meta = ckptr.metadata(path).item_metadata.tree
    import jax  # pylint: disable=g-import-not-at-top
    restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
    tree = ckptr.restore(path, restore_args=restore_args)
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  h = hashlib.sha256()
  for p, x in leaves:
    h.update(jax.tree_util.keystr(p).encode())
    h.update(np.ascontiguousarray(x).tobytes())
  return step, h.hexdigest(), len(leaves)


def test_killed_run_resumes_bitwise(tmp_path):
  cache = str(tmp_path / 'jax_cache')
  seed = int.from_bytes(os.urandom(2), 'little')
  rng = random.Random(seed)
  ref, run = str(tmp_path / 'reference'), str(tmp_path / 'interrupted')

  with open(tmp_path / 'reference.log', 'wb') as log:
    assert _start(ref, cache, log).wait(timeout=300) == 0, open(tmp_path / 'reference.log').read()

  events = []
  # 1. SIGKILL a random moment after a random committed checkpoint (steps 2..6).
  # 2. SIGKILL while Orbax is writing a checkpoint (its tmp directory exists).
  # 3. SIGTERM (preemption) after a later checkpoint: final checkpoint + exit status 143.
  plans = [('kill', lambda: rng.choice([2, 4, 6])), ('kill_while_saving', None),
           ('term', lambda: rng.choice([8, 10, 12]))]
  for i, (kind, pick) in enumerate(plans):
    with open(tmp_path / f'run{i}.log', 'wb') as log:
      before = _committed(run)
      proc = _start(run, cache, log)
      if kind == 'kill_while_saving':
        cond = lambda: _saving(run) and _committed(run) != before  # noqa: E731
      else:
        target = max(pick(), (before[-1] if before else 0) + 2)
        cond = lambda: bool(_committed(run)) and _committed(run)[-1] >= target  # noqa: E731
      reached = _wait_for(proc, cond)
      assert reached, f'seed={seed}: run {i} ended early:\n' + open(tmp_path / f'run{i}.log').read()
      if kind != 'kill_while_saving':
        time.sleep(rng.uniform(0, 0.3))
      proc.send_signal(signal.SIGTERM if kind == 'term' else signal.SIGKILL)
      rc = proc.wait(timeout=120)
    events.append((kind, rc, _committed(run)))
    if kind == 'term':
      text = open(tmp_path / f'run{i}.log').read()
      assert rc == 143, f'seed={seed}: SIGTERM must checkpoint and exit 143, got {rc}:\n{text}'
      stopped = int(re.search(r'checkpoint saved at step (\d+)', text).group(1))
      assert _committed(run)[-1] == stopped, (seed, events)
    else:
      assert rc == -signal.SIGKILL, (seed, events)

  with open(tmp_path / 'final.log', 'wb') as log:
    assert _start(run, cache, log).wait(timeout=300) == 0, open(tmp_path / 'final.log').read()
  summary = json.load(open(os.path.join(run, 'summary.json')))
  # (A SIGTERM that lands during the last steps can leave nothing for the final run to do.)
  assert 0 < summary['resumed_from_step'] <= STEPS, (seed, events, summary)

  step_a, hash_a, n = _state_hash(ref)
  step_b, hash_b, _ = _state_hash(run)
  assert step_a == step_b == STEPS
  assert n > 10
  assert hash_a == hash_b, f'seed={seed}: resumed run diverged; interruptions: {events}'
  ref_summary = json.load(open(os.path.join(ref, 'summary.json')))
  assert summary['final_loss'] == ref_summary['final_loss']
  assert not os.path.exists(os.path.join(run, 'checkpoints_corrupt'))
