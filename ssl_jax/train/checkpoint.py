"""Orbax checkpoints: train state + data-iterator position + run metadata, auto-resume.

Layout: ``WORKDIR/checkpoints/<step>/{state,data,meta}``.

What is guaranteed (and tested in tests/train/test_checkpoint_safety.py):

* Atomic writes. Orbax writes each step into ``<step>.orbax-checkpoint-tmp*`` and renames it when
  every item is complete; a directory with that suffix is never listed as a step, so a kill in the
  middle of an (async) save leaves the previous checkpoint as the latest. Leftover temporary
  directories are removed when the next run opens the manager (``cleanup_tmp_directories``).
* Corruption detection. ``meta`` stores a fingerprint of every state leaf (an order-sensitive
  wrapping sum of its bit patterns, computed on device). ``restore_latest`` tries the newest step
  first; if it cannot be read (truncated/zero-byte files, bad JSON, missing items) or its
  fingerprint differs, it logs why, moves it aside to ``WORKDIR/checkpoints_corrupt/`` and falls
  back to the previous step.
* A checkpoint written by a different model is refused with a message saying what differs
  (method, backbone, parameter names/shapes) instead of a shape error deep inside Orbax.
* A failed write (disk full, permissions) raises ``CheckpointSaveError`` naming the step, the cause
  and the steps that are still intact; older checkpoints are only deleted after a newer one has
  been committed, so they stay intact.
* A state with NaN/Inf is never written: ``save`` raises ``NonFiniteStateError`` instead.
"""
from __future__ import annotations

import errno
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from ssl_jax import paths


class CheckpointError(RuntimeError):
  """Base class of checkpoint failures that are not the user's config."""


class CheckpointSaveError(CheckpointError):
  """Writing a checkpoint failed (disk full, permission...); older checkpoints are intact."""


class CorruptCheckpointError(CheckpointError):
  """A checkpoint cannot be read back or does not match its recorded fingerprint."""


class CheckpointMismatchError(ValueError):
  """The checkpoint in the workdir was written by a different model/config."""


class NonFiniteStateError(RuntimeError):
  """The state to be saved holds NaN or Inf; it is not written."""


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


# -- fingerprints & finiteness -------------------------------------------------------------------
def _leaf_digest(x):
  """uint32 digest of an array's exact bits: sum_i bits_i * odd_weight_i (mod 2^32).

  Integer wrap-around sums are exact and associative, so the value does not depend on how XLA
  orders the reduction (or on the sharding); every weight is odd, hence any single changed element
  changes the digest, and the weights depend on the position, so swapped elements do too.
  """
  x = jnp.asarray(x)
  if x.dtype == jnp.bool_:
    u = x.astype(jnp.uint32)
  else:
    size = x.dtype.itemsize
    utype = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[size]
    u = jax.lax.bitcast_convert_type(x, utype).astype(jnp.uint32)
  u = u.reshape(-1)
  weights = (jnp.arange(u.shape[0], dtype=jnp.uint32) * jnp.uint32(0x9E3779B1)) | jnp.uint32(1)
  mixed = u * weights
  mixed = mixed ^ (mixed >> 16)
  return jnp.sum(mixed, dtype=jnp.uint32) + jnp.uint32(u.shape[0])


def _digest_and_finite(tree):
  leaves = jax.tree_util.tree_leaves(tree)
  digests = [_leaf_digest(x) for x in leaves]
  finite = [jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.array(True)
            for x in leaves]
  return digests, finite


_digest_fn = jax.jit(_digest_and_finite)


def _host(x):
  """A replicated scalar (possibly a multi-process global array) as a numpy value."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)
  return np.asarray(jax.device_get(x))


def inspect_state(state) -> tuple[dict, list]:
  """({leaf path: uint32 digest}, [paths of leaves with NaN/Inf]) of a concrete state."""
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
  digests, finite = _digest_fn(state)
  digests = [int(_host(d)) for d in digests]
  finite = [bool(_host(f)) for f in finite]
  return dict(zip(paths, digests)), [p for p, ok in zip(paths, finite) if not ok]


def _errno_in(err: BaseException, code: int) -> bool:
  """Whether ``err`` (or anything in its cause/context chain or exception group) is OSError(code)."""
  seen, todo = set(), [err]
  while todo:
    e = todo.pop()
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno == code:
      return True
    todo += [e.__cause__, e.__context__] + list(getattr(e, 'exceptions', ()))
  return code == errno.ENOSPC and 'No space left on device' in str(err)


def check_workdir(workdir: str) -> str:
  """Creates ``workdir`` if needed and checks that it is a writable directory (ValueError if not).

  Fails in seconds, before anything is compiled, instead of at the first checkpoint; a bucket
  (gs://...) gets the same probe write, so missing credentials or a wrong bucket show here too.
  """
  path = paths.as_path(workdir)
  if path.exists() and not path.is_dir():
    raise ValueError(f'--workdir={workdir} exists and is not a directory')
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f'.write_test.{os.getpid()}'
    probe.write_text('ok')
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except  # OSError locally; HttpError etc. remote
    reason = getattr(e, 'strerror', None) or str(e)
    raise ValueError(f'--workdir={workdir} is not a writable directory ({reason}: '
                     f'{getattr(e, "filename", None) or path})') from e
  return str(path)


class Checkpointer:
  """A thin wrapper over ``ocp.CheckpointManager`` (async, keep-last-N) with the guarantees above."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.workdir = paths.as_path(workdir)   # gs://... stays a URL
    self.directory = self.workdir / 'checkpoints'
    self.quarantine_dir = self.workdir / 'checkpoints_corrupt'
    self._pending = None  # step of the save that may still be running in the background
    self.manager = self._open(keep, async_save)
    self._keep, self._async = keep, async_save

  def _open(self, keep, async_save):
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save,
                                             cleanup_tmp_directories=True),
        item_names=('state', 'data', 'meta'))

  def latest_step(self):
    return self.manager.latest_step()

  def committed_steps(self) -> list[int]:
    """Steps whose directory was committed (renamed from its temporary name), read from disk."""
    if not self.directory.is_dir():
      return []
    steps = sorted(int(p.name) for p in self.directory.iterdir() if re.fullmatch(r'\d+', p.name))
    if paths.is_remote(self.directory):  # a bucket has no rename: Orbax commits with a marker file
      steps = [s for s in steps if (self.directory / str(s) / 'commit_success.txt').exists()]
    return steps

  # -- save ----------------------------------------------------------------------------------------
  def save(self, step: int, state, data_state: dict, meta: dict, force: bool = False) -> bool:
    """Starts an (async) save of ``state`` at ``step``; refuses a non-finite state.

    Raises NonFiniteStateError if any leaf holds NaN/Inf, CheckpointSaveError if this or the
    previous (background) save failed.
    """
    digests, bad = inspect_state(state)
    if bad:
      raise NonFiniteStateError(
          f'refusing to checkpoint step {step}: the train state holds NaN/Inf in {bad[:3]}'
          f'{" and more" if len(bad) > 3 else ""}; last good checkpoint: '
          f'{self.last_good()}')
    if step in self.manager.all_steps():
      return False  # already saved (e.g. preemption right after a periodic save)
    meta = dict(meta, step=int(step), fingerprint=digests)
    try:
      saved = self.manager.save(
          step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                        data=ocp.args.JsonSave(data_state),
                                        meta=ocp.args.JsonSave(meta)), force=force)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(self._pending if self._pending is not None else step, e) from e
    if saved:
      self._pending = step
    return saved

  def last_good(self) -> str:
    """The newest committed checkpoint as 'step N in DIR' (for error messages)."""
    steps = self.committed_steps()
    return f'step {steps[-1]} in {self.directory}' if steps else f'none in {self.directory}'

  def _save_error(self, step, err) -> CheckpointSaveError:
    self._pending = None
    if _errno_in(err, errno.ENOSPC):
      cause = 'the disk is full (No space left on device)'
    elif _errno_in(err, errno.EACCES) or _errno_in(err, errno.EROFS):
      cause = f'permission denied / read-only file system ({err})'
    else:
      cause = f'{type(err).__name__}: {err}'
    intact = [s for s in self.committed_steps() if s != step]
    resume = (f'rerun the same command to resume from step {intact[-1]}' if intact
              else 'no earlier checkpoint exists')
    return CheckpointSaveError(
        f'saving the checkpoint of step {step} to {self.directory} failed: {cause}. The previous '
        f'checkpoints are intact (steps {intact}); free space or fix the problem, then {resume}.')

  def wait(self):
    """Blocks until the background save has been committed; raises CheckpointSaveError if not."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(self._pending, e) from e
    self._pending = None

  def close(self, raise_errors: bool = True):
    """Waits for the pending save and closes; ``raise_errors=False`` only logs a failure (used
    while another exception is already propagating)."""
    try:
      self.wait()
    except CheckpointSaveError as e:
      if raise_errors:
        raise
      logging.error('%s', e)
    finally:
      try:
        self.manager.close()
      except Exception as e:  # pylint: disable=broad-except
        logging.error('closing the checkpoint manager failed: %s', e)

  # -- restore -------------------------------------------------------------------------------------
  def restore(self, step: int, abstract_state, meta: dict):
    """Restores (state, data_state) at ``step`` after checking ``meta`` matches and the state's
    fingerprint matches the one recorded at save time."""
    saved_meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    saved_meta = saved_meta['meta']
    reason = describe_mismatch(saved_meta, meta)
    if reason:
      raise CheckpointMismatchError(
          f'the checkpoint at {self.directory}/{step} was written by a different model and cannot '
          f'be resumed ({reason}). Use a new --workdir or the matching config.')
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    expected = saved_meta.get('fingerprint')
    if expected is not None:
      got, _ = inspect_state(out['state'])
      bad = [k for k in expected if got.get(k) != expected[k]]
      if bad or set(got) != set(expected):
        raise CorruptCheckpointError(
            f'checkpoint {self.directory}/{step}: contents differ from the fingerprint recorded '
            f'at save time in {bad[:3] or sorted(set(got) ^ set(expected))[:3]}')
    return out['state'], out['data']

  def restore_latest(self, abstract_state, meta: dict):
    """(step, state, data_state) of the newest readable checkpoint, or None if there is none.

    Unreadable or corrupt checkpoints are reported, moved to ``checkpoints_corrupt/`` and skipped;
    a checkpoint of a different model raises CheckpointMismatchError; if checkpoints exist but none
    is readable, CorruptCheckpointError.
    """
    from ssl_jax.train import preemption  # pylint: disable=g-import-not-at-top
    steps = sorted(self.manager.all_steps(), reverse=True)
    failures = []
    for step in steps:
      error = None
      try:
        state, data_state = self.restore(step, abstract_state, meta)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        error = e
      # Every process must take the same decision (a corrupt shard may be seen by one host only).
      if not preemption.any_process(error is not None):
        return step, state, data_state
      why = f'{type(error).__name__}: {str(error)[:300]}' if error else 'corrupt on another host'
      logging.error('Checkpoint %s/%d is unreadable (%s); moving it to %s and falling back to the '
                    'previous checkpoint.', self.directory, step, why, self.quarantine_dir)
      failures.append(f'step {step}: {why}')
      self._quarantine(step)
    if failures:
      raise CorruptCheckpointError(
          f'no readable checkpoint in {self.directory} (moved to {self.quarantine_dir}): '
          + '; '.join(failures) + '. Start again in a new --workdir or restore a backup.')
    return None

  def _quarantine(self, step: int):
    """Moves ``checkpoints/<step>`` aside so that it is neither listed nor overwritten."""
    if jax.process_index() == 0:
      self.quarantine_dir.mkdir(parents=True, exist_ok=True)
      dst = self.quarantine_dir / f'{step}-{time.strftime("%Y%m%d-%H%M%S")}'
      (self.directory / str(step)).rename(dst)
    from ssl_jax.train import preemption  # pylint: disable=g-import-not-at-top
    preemption.barrier(f'ssl_jax_quarantine_{step}')
    self.manager.reload()
