"""Orbax checkpoints: train state + data-iterator position + run metadata, auto-resume.

Layout: ``WORKDIR/checkpoints/<step>/{state,data,meta}``. Orbax writes each step into a temporary
directory and renames it when complete, so a half-written checkpoint is never taken as the latest.
``meta`` records the method, backbone and parameter shapes; restoring into a different model fails
with a message saying what differs instead of a shape error deep inside Orbax.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def run_metadata(config, abstract_state) -> dict:
  """What must match for a checkpoint to be restorable into this run."""
  shapes = jax.tree_util.tree_map(lambda x: list(x.shape), abstract_state.params)
  flat = {jax.tree_util.keystr(k): v for k, v in
          jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, list))[0]}
  return {'method': config.method.name, 'backbone': config.model.backbone, 'param_shapes': flat}


def describe_mismatch(saved: dict, current: dict) -> str | None:
  """A human-readable reason why ``saved`` metadata cannot be restored into ``current``."""
  for key in ('method', 'backbone'):
    if saved.get(key) != current.get(key):
      return f'{key}: checkpoint has {saved.get(key)!r}, config has {current.get(key)!r}'
  a, b = saved.get('param_shapes', {}), current.get('param_shapes', {})
  if a != b:
    missing = sorted(set(b) - set(a))[:3]
    extra = sorted(set(a) - set(b))[:3]
    diff = [k for k in sorted(set(a) & set(b)) if a[k] != b[k]][:3]
    parts = []
    if missing:
      parts.append(f'params missing from checkpoint: {missing}')
    if extra:
      parts.append(f'params only in checkpoint: {extra}')
    if diff:
      parts.append('shape differences: ' + ', '.join(f'{k} {a[k]} vs {b[k]}' for k in diff))
    return '; '.join(parts) or 'parameter shapes differ'
  return None


class Checkpointer:
  """A thin wrapper over ``ocp.CheckpointManager`` (async, keep-last-N)."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save),
        item_names=('state', 'data', 'meta'))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, meta: dict, force: bool = False) -> bool:
    return self.manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      data=ocp.args.JsonSave(data_state),
                                      meta=ocp.args.JsonSave(meta)), force=force)

  def restore(self, step: int, abstract_state, meta: dict):
    """Restores (state, data_state) at ``step`` after checking ``meta`` matches."""
    saved_meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    reason = describe_mismatch(saved_meta['meta'], meta)
    if reason:
      raise ValueError(f'the checkpoint at {self.directory}/{step} was written by a different '
                       f'model and cannot be resumed ({reason}). Use a new --workdir or the '
                       'matching config.')
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return out['state'], out['data']

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
