"""Helpers shared by the Barlow Twins / VICReg / SwAV / InstDis tests."""
from __future__ import annotations

import importlib.util
import os
import tempfile

import jax
import numpy as np

from ssl_jax.train import loop, sharding
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name: str, variant: str = 'builtin'):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}',
                                                os.path.join(ROOT, 'configs', f'{name}.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant)


def run(config, n_devices: int, steps: int, snapshot=None):
  """Like helpers.run_steps, but also returns the Experiment, the initial state (host copy) and
  ``snapshot(state)`` (host copy) after every step."""
  exp = loop.Experiment(config, tempfile.mkdtemp(), helpers.mesh(n_devices))
  state = exp.initial_state()
  init = jax.device_get(state)
  history, snaps = [], []
  for i in range(steps):
    batch = sharding.global_batch(exp.mesh, exp.train_ds[i])
    state, metrics = exp.step_fn(state, batch)
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    if snapshot is not None:
      snaps.append(jax.device_get(snapshot(state)))
  return dict(exp=exp, state=state, init=init, history=history, snaps=snaps)


def assert_restores_exactly(exp, state):
  """Saves ``state`` with the run's Checkpointer (Orbax) and restores it into a fresh abstract
  state; every leaf (params, opt state, buffers) must come back bit-identical."""
  from ssl_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  ckpt = ckpt_lib.Checkpointer(tempfile.mkdtemp(), keep=1, async_save=False)
  step = int(jax.device_get(state.step))
  ckpt.save(step, state, {'pos': 0}, exp.meta, force=True)
  ckpt.wait()
  abstract = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), exp.abstract_state,
      exp.state_sharding)
  restored, data_state = ckpt.restore(step, abstract, exp.meta)
  ckpt.close()
  assert data_state == {'pos': 0}
  a = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
  b = jax.tree_util.tree_leaves(jax.device_get(restored))
  assert len(a) == len(b)
  for (path, x), y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))
