"""Runs made before the run-assembly restructure (issue 29) still restore.

``tests/data/old_runs/{simclr,sit}`` were written by the code of main 3583ea2 (before
train/experiment.py, the saved config.json, typed hyper-parameters and the backbone fields in
config.model): 2 steps of ``configs/<name>.py:builtin`` shrunk by ``tests.helpers.tiny`` (digits,
16 px), a checkpoint at step 2, and the features of a fixed uint8 batch at that step. SiT is the
method whose backbone moved from the method into ``config.model.num_prefix_tokens``.

What is promised: such a workdir (no ``config.json``) is read with the command line's config and
a warning, gives the same features, and a trainer resumes it.

Runs of the methods with an EMA teacher (BYOL, MoCo v1/v2/v3, DINO, iBOT, data2vec, CMAE) made
before ``methods/teacher.py`` kept it in another buffer layout (``buffers['target']``; DINO/iBOT
``buffers['teacher'][module]`` with ``batch_stats['teacher_*']``; data2vec
``buffers['teacher']['backbone']``): they are refused with the checkpoint-mismatch message, which
names the buffers and the two ways on (a new workdir, or ``train.warm_start``).
"""
from __future__ import annotations

import shutil
import pathlib

import numpy as np
import pytest

from configs import byol, simclr, sit
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import experiment as experiment_lib
from ssl_jax.train import loop, sharding
from tests import helpers

OLD_RUNS = pathlib.Path(__file__).resolve().parents[1] / 'data' / 'old_runs'


def old_config(name):
  mod = {'simclr': simclr, 'sit': sit}[name]
  c = helpers.tiny(mod.get_config('builtin'), steps=2)
  c.data.name = 'digits'
  c.train.checkpoint_every = 2
  c.train.final_eval = False
  c.train.progress_bar = False
  if name == 'simclr':
    c.method.proj_hidden_dim = 16
    c.method.proj_dim = 8
  return c


def fixed_images():
  return (np.arange(8 * 16 * 16 * 3) % 251).astype(np.uint8).reshape(8, 16, 16, 3)


@pytest.mark.parametrize('name', ['simclr', 'sit'])
def test_old_run_is_read_with_the_same_features(name, tmp_path):
  workdir = tmp_path / name
  shutil.copytree(OLD_RUNS / name, workdir)
  assert not (workdir / 'config.json').exists(), 'a run from before config.json existed'
  run = experiment_lib.Experiment.for_reading(old_config(name), str(workdir), helpers.mesh(1))
  state = run.restore_for_reading()
  assert int(state.step) == 2
  got = np.asarray(run.feature_fn(state.params, state.buffers,
                                  sharding.global_batch(run.mesh, fixed_images())))
  want = np.load(workdir / 'features_at_step2.npy')
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_old_run_resumes_training(tmp_path):
  workdir = tmp_path / 'simclr'
  shutil.copytree(OLD_RUNS / 'simclr', workdir)
  c = old_config('simclr')
  c.train.steps = 3
  summary = loop.train_and_evaluate(c, str(workdir))
  assert summary['resumed_from_step'] == 2 and summary['steps_run'] == 1
  assert np.isfinite(summary['final_loss'])
  assert (workdir / 'config.json').exists(), 'the resumed run now remembers its config'


def test_run_with_the_old_teacher_layout_is_refused(tmp_path):
  """A BYOL checkpoint with the momentum encoder under ``buffers['target']`` (before teacher.py)
  is refused with a message that names the buffers; nothing is moved."""
  run = experiment_lib.Experiment(helpers.tiny(byol.get_config('builtin'), steps=2),
                                  str(tmp_path), helpers.mesh(1))
  state = run.initial_state()
  old = state.replace(buffers={('target' if k == 'teacher' else k): v
                               for k, v in state.buffers.items()})
  writer = ckpt_lib.Checkpointer(str(tmp_path))
  writer.save(2, old, {}, run.meta)
  writer.close()
  run.open_checkpointer(read_only=True)
  with pytest.raises(ckpt_lib.CheckpointMismatchError) as e:
    run.restore_latest()
  run.checkpointer.close()
  msg = str(e.value)
  assert 'the buffers' in msg and 'buffers.target.' in msg and 'buffers.teacher.' in msg, msg
  assert '--workdir' in msg and 'warm_start' in msg, msg
  assert ckpt_lib.Checkpointer(str(tmp_path)).committed_steps() == [2], 'nothing moved'
