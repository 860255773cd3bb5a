"""Orbax checkpoints: train state + data-iterator position + run metadata, auto-resume.

Layout: ``WORKDIR/checkpoints/<step>/{state,data,meta}``.

What is guaranteed (and tested in tests/train/test_checkpoint_safety.py):

* Atomic writes. Orbax writes each step into ``<step>.orbax-checkpoint-tmp*`` and renames it when
  every item is complete; a directory with that suffix is never listed as a step, so a kill in the
  middle of an (async) save leaves the previous checkpoint as the latest. Leftover temporary
  directories are removed when the next trainer opens the manager (``cleanup_tmp_directories``);
  readers (eval, export, viz: ``read_only=True``) never create, clean or move anything.
* Corruption detection. ``meta`` stores a fingerprint of every state leaf (an order-sensitive
  wrapping sum of its bit patterns, computed on device). ``restore_latest`` tries the newest step
  first; if it cannot be read (truncated/zero-byte files, bad JSON, missing items) or its
  fingerprint differs, it logs why, moves it aside to ``WORKDIR/checkpoints_corrupt/`` and falls
  back to the previous step.
* A checkpoint written by a different model, or whose train-state tree differs from the config's
  (optimizer layout after an optim.* change, shapes, dtypes; compared on Orbax's tree metadata, no
  array is read), is refused with a message saying what differs, and nothing is moved: only proven
  damage is quarantined. ``train.warm_start=True`` instead loads its parameters (and the buffers
  whose shapes agree) into the new optimizer state.
* Transient read errors (an OSError other than 'not found', HTTP 5xx/429 of a remote store) are
  retried with backoff, then stop the run (``CheckpointIOError``) without moving anything.
* A workdir whose checkpoints were all quarantined by an earlier run refuses to start again from
  step 0 unless ``train.ignore_quarantined=True``.
* A failed write (disk full, permissions) raises ``CheckpointSaveError`` naming the step, the cause
  and the steps that are still intact; older checkpoints are only deleted after a newer one has
  been committed, so they stay intact.
* A state with NaN/Inf is never written: ``save`` raises ``NonFiniteStateError`` instead.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

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


class CheckpointIOError(CheckpointError):
  """Reading a checkpoint failed with an I/O error that may pass (network, quota, permissions):
  retried, then raised; the checkpoint is not moved, since nothing shows it is damaged."""


# Outcomes of one restore attempt, in the order in which processes agree on the worst one.
_OUTCOMES = (None, CorruptCheckpointError, CheckpointMismatchError, CheckpointIOError)
_FIELDS = {'params': 'the parameters (params)',
           'opt_state': 'the optimizer state (opt_state: did optim.* change?)',
           'buffers': 'the buffers (BatchNorm statistics, EMA teacher, queues...)'}
# HTTP / gRPC statuses of a remote store (gs://) that a retry can fix.
_TRANSIENT = re.compile(r'\b(UNAVAILABLE|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED)\b|'
                        r'\b(HTTP|status|code)\D{0,12}(408|429|5\d\d)\b|'
                        r'Connection (reset|refused|aborted)|timed out', re.I)


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


def _leaf_name(path) -> str:
  """'opt_state.0.mu.conv.kernel': a leaf's path as Orbax names it on disk (attribute, key and
  index alike), so that a saved tree and a live one compare by name."""
  parts = []
  for k in path:
    for attr in ('name', 'key', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return '.'.join(parts)


def tree_signature(tree) -> dict:
  """{leaf name: (shape, dtype)} of a tree of arrays, ShapeDtypeStructs or Orbax metadata."""
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape') and hasattr(x, 'dtype'))[0]
  return {_leaf_name(p): (tuple(x.shape), str(np.dtype(x.dtype))) for p, x in leaves
          if hasattr(x, 'shape')}


def _examples(names, n=3) -> str:
  return ', '.join(names[:n]) + (f' and {len(names) - n} more' if len(names) > n else '')


def describe_tree_mismatch(saved: dict, current: dict) -> str | None:
  """What differs between two ``tree_signature``s: entries on one side only, shapes, dtypes."""
  only_saved = sorted(set(saved) - set(current))
  only_here = sorted(set(current) - set(saved))
  common = sorted(set(saved) & set(current))
  shapes = [k for k in common if saved[k][0] != current[k][0]]
  dtypes = [k for k in common if saved[k][0] == current[k][0] and saved[k][1] != current[k][1]]
  if not (only_saved or only_here or shapes or dtypes):
    return None
  fields = sorted({k.split('.')[0] for k in only_saved + only_here + shapes + dtypes})
  parts = []
  if only_saved:
    parts.append(f'{len(only_saved)} entries only in the checkpoint: {_examples(only_saved)}')
  if only_here:
    parts.append(f'{len(only_here)} entries only in this config: {_examples(only_here)}')
  if shapes:
    parts.append('shapes differ: ' + _examples(
        [f'{k} {list(saved[k][0])} vs {list(current[k][0])}' for k in shapes]))
  if dtypes:
    parts.append('dtypes differ: ' + _examples(
        [f'{k} {saved[k][1]} vs {current[k][1]}' for k in dtypes]))
  return ('differs in ' + ', '.join(_FIELDS.get(f, f) for f in fields) + ': '
          + '; '.join(parts))


def _chain(err: BaseException):
  """``err`` and everything in its cause/context chain or exception group."""
  seen, todo = set(), [err]
  while todo:
    e = todo.pop()
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    yield e
    todo += [e.__cause__, e.__context__] + list(getattr(e, 'exceptions', ()))


def is_transient(err: BaseException) -> bool:
  """An I/O error a retry may fix: an OSError other than 'not found', or a retryable HTTP/gRPC
  status of a remote store. Damaged content (parse errors, truncated arrays) is not."""
  for e in _chain(err):
    if isinstance(e, OSError) and not isinstance(
        e, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
      return True
    if _TRANSIENT.search(str(e)):
      return True
  return False


@contextlib.contextmanager
def _classified(where: str, what: str):
  """Turns a failure while reading ``what`` of checkpoint ``where`` into a CheckpointIOError
  (transient), CheckpointMismatchError (Orbax's tree-structure check) or CorruptCheckpointError."""
  try:
    yield
  except (CheckpointError, CheckpointMismatchError):
    raise
  except Exception as e:  # pylint: disable=broad-except
    text = f'{type(e).__name__}: {str(e)[:300]}'
    if is_transient(e):
      raise CheckpointIOError(f'reading {what} of checkpoint {where} failed: {text}') from e
    if 'structures do not match' in str(e):
      raise CheckpointMismatchError(
          f'the checkpoint at {where} does not fit this config\'s train state ({text}); nothing '
          'was moved. Either use a new --workdir, or rerun with --config.train.warm_start=True.'
      ) from e
    raise CorruptCheckpointError(f'{what} of checkpoint {where} is unreadable ({text})') from e


def _max_over_processes(code: int) -> int:
  """The largest ``code`` over all JAX processes (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return code
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(np.max(multihost_utils.process_allgather(np.asarray(code, np.int32))))


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


@jax.jit
def _leaf_digest_and_finite(x):
  """(uint32 digest, all finite) of one leaf; jitted per leaf, so compiled once per (shape, dtype,
  sharding) and reused by every later leaf, save and restore of the process. One jit over the
  whole state compiled ~1.8 s for a tiny ViT's 822 leaves at every save and restore (no cache hit
  between them); per leaf, the repeated shapes (params / Adam moments, transformer blocks) share
  their programs. Used for states within one process (:func:`inspect_state`)."""
  finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.array(True)
  return _leaf_digest(x), finite


@jax.jit
def _digest_and_finite(tree):
  """All leaves' (digests, finite flags) in one program: for states spread over several
  processes, where one program per leaf deadlocked a two-process FSDP save (each process ran the
  leaves' cross-process reductions in its own order)."""
  pairs = [_leaf_digest_and_finite(x) for x in jax.tree_util.tree_leaves(tree)]
  return [d for d, _ in pairs], [f for _, f in pairs]


def _host(x):
  """A replicated scalar (possibly a multi-process global array) as a numpy value."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)
  return np.asarray(jax.device_get(x))


def inspect_state(state) -> tuple[dict, list]:
  """({leaf path: uint32 digest}, [paths of leaves with NaN/Inf]) of a concrete state."""
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
  leaves = jax.tree_util.tree_leaves(state)
  if all(not isinstance(x, jax.Array) or x.is_fully_addressable for x in leaves):
    digests, finite = zip(*[_leaf_digest_and_finite(x) for x in leaves]) if leaves else ((), ())
  else:
    digests, finite = _digest_and_finite(state)
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

  retries = 3       # transient read errors: attempts after the first, waiting backoff_s * 2**i
  backoff_s = 2.0

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    # read_only: for readers (eval, export, viz, benchmarks) of a possibly live run: nothing is
    # created, saved, cleaned up (a trainer's in-progress ``*.orbax-checkpoint-tmp*``) or moved.
    self.read_only = read_only
    self.workdir = paths.as_path(workdir)   # gs://... stays a URL
    self.directory = self.workdir / 'checkpoints'
    self.quarantine_dir = self.workdir / 'checkpoints_corrupt'
    self._pending = None  # step of the save that may still be running in the background
    self.manager = self._open(keep, async_save)
    self._keep, self._async = keep, async_save

  def _open(self, keep, async_save):
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=not self.read_only,
                                             enable_async_checkpointing=async_save,
                                             cleanup_tmp_directories=not self.read_only,
                                             read_only=self.read_only),
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
    if self.read_only:
      raise ValueError(f'{self.directory} was opened read-only; only the trainer saves')
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
    """Waits for the pending save and for the removal of a killed run's temporary directories,
    and closes; ``raise_errors=False`` only logs a failure (used while another exception is
    already propagating)."""
    try:
      self.wait()
    except CheckpointSaveError as e:
      if raise_errors:
        raise
      logging.error('%s', e)
    finally:
      try:
        # Orbax removes them in a background future it starts when the manager opens and awaits
        # before its first save only; its close() does not wait for it.
        await_cleanup = getattr(self.manager, '_maybe_await_cleanup_tmp_directory', None)
        if await_cleanup is not None:
          await_cleanup()
        self.manager.close()
      except Exception as e:  # pylint: disable=broad-except
        logging.error('closing the checkpoint manager failed: %s', e)

  # -- restore -------------------------------------------------------------------------------------
  def _read_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def saved_tree(self, step: int) -> dict:
    """{leaf name: (shape, dtype)} of the train state saved at ``step``, read from Orbax's tree
    metadata (no array is read)."""
    path = epath.Path(self.directory) / str(step) / 'state'
    return tree_signature(ocp.StandardCheckpointHandler().metadata(path).tree)

  def _checked_meta(self, step: int, meta: dict, action: str) -> dict:
    """The saved run metadata of ``step``; CheckpointMismatchError when it was written by another
    model (method, backbone, parameter shapes), naming what differs."""
    where = f'{self.directory}/{step}'
    with _classified(where, 'its metadata'):
      saved_meta = self._read_meta(step)
    reason = describe_mismatch(saved_meta, meta)
    if reason:
      raise CheckpointMismatchError(
          f'the checkpoint at {where} was written by a different model and cannot be {action} '
          f'({reason}). Use a new --workdir or the matching config.')
    return saved_meta

  def restore(self, step: int, abstract_state, meta: dict):
    """Restores (state, data_state) at ``step``.

    Raises CheckpointMismatchError if the checkpoint was written by another model or its state
    tree (optimizer layout, shapes, dtypes) differs from ``abstract_state``; CheckpointIOError on
    a transient I/O error; CorruptCheckpointError if it cannot be read although it matches, or
    its contents differ from the fingerprint recorded at save time.
    """
    where = f'{self.directory}/{step}'
    saved_meta = self._checked_meta(step, meta, 'resumed')
    if abstract_state is not None:
      with _classified(where, 'its tree metadata'):
        saved = self.saved_tree(step)
      reason = describe_tree_mismatch(saved, tree_signature(abstract_state))
      if reason:
        raise CheckpointMismatchError(
            f'the checkpoint at {where} does not fit this config\'s train state ({reason}); '
            f'nothing was moved. Either use a new --workdir, or rerun with '
            f'--config.train.warm_start=True to load its parameters (and the buffers whose shapes '
            f'agree) into a fresh optimizer state and continue from step {step}.')
    with _classified(where, 'the train state'):
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    expected = saved_meta.get('fingerprint')
    if expected is not None:
      got, _ = inspect_state(out['state'])
      bad = [k for k in expected if got.get(k) != expected[k]]
      if bad or set(got) != set(expected):
        raise CorruptCheckpointError(
            f'checkpoint {where}: contents differ from the fingerprint recorded at save time in '
            f'{bad[:3] or sorted(set(got) ^ set(expected))[:3]}')
    return out['state'], out['data']

  def warm_start(self, step: int, fresh_state, meta: dict):
    """(state, data_state): ``fresh_state`` (this config's new optimizer state) with the
    parameters, step, skip count and data position of the checkpoint at ``step``, and each buffer
    (EMA teacher, BatchNorm statistics...) whose name and shape agree.

    The parameters must match by name and shape (a cast to this config's dtype is allowed);
    otherwise CheckpointMismatchError. Arrays are read into host memory first.
    """
    where = f'{self.directory}/{step}'
    self._checked_meta(step, meta, 'warm-started from')
    with _classified(where, 'the train state'):
      md = ocp.StandardCheckpointHandler().metadata(epath.Path(where) / 'state').tree
      args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), md)
      with ocp.PyTreeCheckpointer() as reader:
        tree = reader.restore(epath.Path(where) / 'state', restore_args=args)
      data = self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
    saved = {_leaf_name(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    kept, fresh = [], []

    def take(path, leaf, required):
      name = _leaf_name(path)
      value = saved.get(name)
      if value is None or tuple(value.shape) != tuple(leaf.shape):
        if required:
          raise CheckpointMismatchError(
              f'cannot warm-start from {where}: {name} is '
              f'{"missing" if value is None else f"{list(value.shape)}"} there, '
              f'{list(leaf.shape)} here. Use a new --workdir.')
        fresh.append(name)
        return leaf
      kept.append(name)
      value = value.astype(leaf.dtype)
      return jax.make_array_from_callback(value.shape, leaf.sharding, lambda i: value[i])

    state = fresh_state
    for field, required in (('params', True), ('buffers', False), ('step', True),
                            ('skipped', False)):
      sub = jax.tree_util.tree_map_with_path(
          lambda p, x, f=field, r=required: take((jax.tree_util.GetAttrKey(f),) + p, x, r),
          getattr(state, field))
      state = state.replace(**{field: sub})
    logging.warning(
        'Warm start (train.warm_start=True) from %s: restored the parameters, step %d and %d of '
        '%d buffers; fresh from this config: the optimizer state%s.', where, step,
        sum(n.startswith('buffers') for n in kept),
        len(jax.tree_util.tree_leaves(fresh_state.buffers)),
        f' and buffers {fresh[:5]}' if fresh else '')
    return state, data['data']

  def quarantined(self) -> list[str]:
    """Names of the checkpoints moved to ``checkpoints_corrupt/`` by earlier runs."""
    if not self.quarantine_dir.is_dir():
      return []
    return sorted(p.name for p in self.quarantine_dir.iterdir())

  def _agreed_restore(self, step, abstract_state, meta):
    """(outcome, state/data or the local error) of one restore attempt; the outcome is the
    same on every process (the worst one), as a corrupt shard may be seen by one host only."""
    result, error = None, None
    try:
      result = self.restore(step, abstract_state, meta)
    except (CheckpointMismatchError, CheckpointIOError, CorruptCheckpointError) as e:
      error = e
    code = 0 if error is None else _OUTCOMES.index(type(error))
    return _OUTCOMES[_max_over_processes(code)], (result if error is None else error)

  def restore_latest(self, abstract_state, meta: dict, warm_start=None,
                     ignore_quarantined: bool = False):
    """(step, state, data_state) of the newest readable checkpoint, or None if there is none.

    * Corrupt checkpoints (fingerprint differs, unreadable files, bad JSON) are reported, moved
      to ``checkpoints_corrupt/`` and skipped; if checkpoints exist but none is readable,
      CorruptCheckpointError.
    * A checkpoint that does not fit (another model, optimizer layout, shapes, dtypes) raises
      CheckpointMismatchError and nothing is moved, unless ``warm_start`` (a function returning a
      fresh concrete state) is given: then its parameters/buffers are loaded into that state.
    * Transient I/O errors are retried ``retries`` times with exponential backoff, then raise
      CheckpointIOError; nothing is moved.
    * No checkpoint but quarantined ones from an earlier run: CorruptCheckpointError unless
      ``ignore_quarantined`` (starting over silently would set that run aside).
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    failures = []
    for step in steps:
      for attempt in range(self.retries + 1):
        outcome, result = self._agreed_restore(step, abstract_state, meta)
        if outcome is not CheckpointIOError or attempt == self.retries:
          break
        delay = self.backoff_s * 2 ** attempt
        logging.warning('Reading checkpoint %s/%d failed with an I/O error (%s); retrying in '
                        '%.0f s (%d/%d).', self.directory, step, result, delay, attempt + 1,
                        self.retries)
        time.sleep(delay)
      if outcome is None:
        return (step,) + tuple(result)
      if not isinstance(result, Exception):
        result = outcome(f'checkpoint {self.directory}/{step}: {outcome.__name__} on another host')
      if outcome is CheckpointIOError:
        raise CheckpointIOError(
            f'{result} (tried {self.retries + 1} times); nothing was moved. Check the storage '
            '(network, permissions, quota) and rerun the same command.') from result
      if outcome is CheckpointMismatchError:
        if warm_start is None:
          raise result
        return (step,) + tuple(self.warm_start(step, warm_start(), meta))
      why = f'{type(result).__name__}: {str(result)[:300]}'
      logging.error('Checkpoint %s/%d is unreadable (%s); moving it to %s and falling back to the '
                    'previous checkpoint.', self.directory, step, why, self.quarantine_dir)
      failures.append(f'step {step}: {why}')
      self._quarantine(step)
    if failures:
      raise CorruptCheckpointError(
          f'no readable checkpoint in {self.directory} (moved to {self.quarantine_dir}): '
          + '; '.join(failures) + '. Start again in a new --workdir or restore a backup.')
    moved = self.quarantined()
    if moved and not ignore_quarantined:
      raise CorruptCheckpointError(
          f'{self.directory} has no checkpoint, but {self.quarantine_dir} holds {moved} set aside '
          'as unreadable by an earlier run; starting from step 0 here would silently replace '
          'that run. Inspect them, use a new --workdir, or rerun with '
          '--config.train.ignore_quarantined=True to start over in this one.')
    return None

  def _quarantine(self, step: int):
    """Moves ``checkpoints/<step>`` aside so that it is neither listed nor overwritten."""
    if self.read_only:  # a reader only skips it; the trainer moves it
      return
    if jax.process_index() == 0:
      self.quarantine_dir.mkdir(parents=True, exist_ok=True)
      dst = self.quarantine_dir / f'{step}-{time.strftime("%Y%m%d-%H%M%S")}'
      (self.directory / str(step)).rename(dst)
    from ssl_jax.train import preemption  # pylint: disable=g-import-not-at-top
    preemption.barrier(f'ssl_jax_quarantine_{step}')
    self.manager.reload()
