"""Runs made before the run-assembly restructure (issue 29) still restore.

``tests/data/old_runs/{simclr,sit}`` were written by the code of main 3583ea2 (before
train/experiment.py, the saved config.json, typed hyper-parameters and the backbone fields in
config.model): 2 steps of ``configs/<name>.py:builtin`` shrunk by ``tests.helpers.tiny`` (digits,
16 px), a checkpoint at step 2, and the features of a fixed uint8 batch at that step. SiT is the
method whose backbone moved from the method into ``config.model.num_prefix_tokens``.

What is promised: such a workdir (no ``config.json``) is read with the command line's config and
a warning, gives the same features, and a trainer resumes it.
"""
from __future__ import annotations

import shutil
import pathlib

import numpy as np
import pytest

from configs import simclr, sit
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
