"""Test utilities for the two-view joint-embedding methods (MoCo, BYOL, SimSiam, NNCLR): load a
config file, run a few real steps keeping every intermediate state, save and restore it."""
from __future__ import annotations

import importlib.util
import os

import jax
import numpy as np

from ssl_jax.data import pipeline
from ssl_jax.train import loop, sharding
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name: str, variant: str = 'builtin', vit: bool = True, **tiny_kw):
  """``configs/<name>.py:<variant>`` shrunk with ``helpers.tiny``; with ``vit`` the backbone is the
  tiny ViT (depth 2, width 32), whose train step compiles several times faster on CPU than the
  ResNet-18's (the heads keep their BatchNorm, so sync-BN and the target's statistics are still
  exercised)."""
  spec = importlib.util.spec_from_file_location(f'cfg_{name}', os.path.join(ROOT, 'configs',
                                                                            f'{name}.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = helpers.tiny(mod.get_config(variant), **tiny_kw)
  if vit:
    c.model.backbone = 'vit_tiny'
  return c


def run_and_save(config, n_devices: int, steps: int, workdir: str):
  """Runs ``steps`` steps on ``n_devices`` with the batches ``helpers.run_steps`` uses, keeping a
  host copy of every state (``states[0]`` = initial), then checkpoints the final state in
  ``workdir``. Returns (experiment, states, metrics)."""
  exp = loop.Experiment(config, workdir, helpers.mesh(n_devices))
  state, _ = exp.restore_or_init()
  states, history = [jax.device_get(state)], []
  for i in range(steps):
    batch = sharding.global_batch(exp.mesh, exp.train_ds[i])
    state, metrics = exp.step_fn(state, batch)
    states.append(jax.device_get(state))
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  iterator = pipeline.make_iterator(exp.train_ds, 0, 1)
  exp.save(state, iterator, force=True)
  exp.checkpointer.close()
  return exp, states, history


def restore(config, n_devices: int, workdir: str):
  """The state a fresh Experiment on ``workdir`` resumes from (host copy)."""
  exp = loop.Experiment(config, workdir, helpers.mesh(n_devices))
  state, _ = exp.restore_or_init()
  exp.checkpointer.close()
  return jax.device_get(state)


def assert_trees_equal(a, b):
  """Bit-exact equality of two pytrees (checkpoint round trips)."""
  la = jax.tree_util.tree_flatten_with_path(a)[0]
  lb = jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  for (path, x), y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))
