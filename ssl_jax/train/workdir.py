"""What a workdir holds besides checkpoints: its one writer's lock and the run's config.

* ``WORKDIR/trainer.lock``: JSON ``{host, pid, proc_start, started}`` of the trainer that writes
  this workdir. A second trainer is refused; a lock whose holder is dead (same host, pid gone or
  reused by another process) is taken over with a warning. Only process 0 of a job writes it.
* ``WORKDIR/config.json``: the resolved config of the run, written (atomically) with the first
  checkpoint of every trainer session. On resume the differences are printed and the ones that
  change the trajectory stop the run (``FIELD_RULES`` below, the one place that decides);
  ``--mode=eval`` / ``--mode=export`` take the trained model's fields from it.
* ``WORKDIR/data_fingerprint.json``: size and hash of the training source's record list
  (``sources.fingerprint``), written with it; a resume on changed data stops.

Limits of the lock. Locally it is created with ``O_CREAT | O_EXCL`` (atomic). On object stores
(``gs://``) there is no exclusive create through ``etils.epath``: the lock is checked, then
written, then read back, so two trainers starting within the same second can both pass; a
holder on another host cannot be checked for liveness, so its lock is only taken over when the
user deletes ``WORKDIR/trainer.lock`` (the error message says so). Readers (eval, export, viz,
benchmarks) never take it: they open checkpoints read-only.
"""
from __future__ import annotations

import fnmatch
import json
import os
import socket
import time

from absl import logging
from etils import epath
import ml_collections

from ssl_jax import paths

LOCK_NAME = 'trainer.lock'
CONFIG_NAME = 'config.json'
DATA_NAME = 'data_fingerprint.json'


class WorkdirLockedError(RuntimeError):
  """Another live trainer holds the workdir."""


class ConfigChangeError(ValueError):
  """The config differs from the workdir's saved one in a field that changes the trajectory."""


class NoCheckpointError(ValueError):
  """A reader (eval, export, viz) was pointed at a workdir without a committed checkpoint."""


def as_path(workdir) -> epath.Path:
  """``workdir`` as an epath.Path: URLs (gs://...) as they are, local paths made absolute."""
  return paths.as_path(workdir)


# -- the lock -------------------------------------------------------------------------------------
def _proc_start(pid: int) -> str | None:
  """The kernel's start time of ``pid`` (Linux /proc), to tell a reused pid from the holder."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, owned by another user
    return True
  return True


def holder_is_dead(holder: dict, host: str | None = None) -> bool:
  """Whether the lock's holder is known to be gone: same host, and its pid is not running or
  now belongs to a process that started at another time. Another host's holder is never
  known to be dead."""
  if holder.get('host') != (host or socket.gethostname()):
    return False
  pid = int(holder.get('pid', -1))
  if pid <= 0 or not _pid_alive(pid):
    return True
  start = holder.get('proc_start')
  return start is not None and _proc_start(pid) not in (None, start)


def _describe(holder: dict) -> str:
  started = holder.get('started')
  when = time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(started)) if started else '?'
  return f"host {holder.get('host')!r}, pid {holder.get('pid')}, since {when}"


class WorkdirLock:
  """The trainer's exclusive hold on a workdir (see the module docstring); a context manager."""

  def __init__(self, workdir, *, is_writer: bool = True):
    self.path = as_path(workdir) / LOCK_NAME
    self.is_writer = is_writer   # only process 0 of a job writes the lock
    self.held = False
    pid = os.getpid()
    self.record = {'host': socket.gethostname(), 'pid': pid, 'proc_start': _proc_start(pid),
                   'started': time.time()}

  def acquire(self) -> 'WorkdirLock':
    if not self.is_writer:
      return self
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
      if self._try_create():
        self.held = True
        return self
      holder = self._read()
      if holder is None:
        continue  # vanished or half-written between our create and read: try again
      if not holder_is_dead(holder):
        raise WorkdirLockedError(
            f'{self.path.parent} is in use by another trainer ({_describe(holder)}); stop it or '
            f'use another --workdir (if that trainer is gone, delete {self.path})')
      logging.warning('Taking over the lock of a dead trainer (%s) in %s.', _describe(holder),
                      self.path.parent)
      self.path.unlink(missing_ok=True)
    raise WorkdirLockedError(f'could not take the lock {self.path}; another trainer keeps '
                             'taking it. Use another --workdir')

  def _try_create(self) -> bool:
    data = json.dumps(self.record)
    if '://' not in os.fspath(self.path):
      try:
        fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, 'w') as f:
        f.write(data)
      return True
    if self.path.exists():  # object store: check, write, read back (see the module docstring)
      return False
    self.path.write_text(data)
    return self._read() == self.record

  def _read(self) -> dict | None:
    try:
      return json.loads(self.path.read_text())
    except (FileNotFoundError, ValueError):
      return None

  def release(self):
    if self.held and self._read() == self.record:  # never delete a lock someone took over
      self.path.unlink(missing_ok=True)
    self.held = False

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


# -- the saved config ------------------------------------------------------------------------------
# One rule table for every config field: (pattern, kind), first match wins, unlisted fields are
# 'run'. 'run' fields define the trajectory (what is computed): a change on resume stops the
# run unless --config.train.allow_config_change=True, and eval/export take them from the saved
# config. 'harmless' fields say how the run is observed, laid out or evaluated: a change on
# resume is printed and accepted, and eval/export take them from the command line.
FIELD_RULES = (
    ('eval.online_*', 'run'),          # the online linear head is part of the trained state
    ('eval.*', 'harmless'),
    ('export.*', 'harmless'),
    ('mesh.*', 'harmless'),            # device layout; the state is resharded on restore
    ('train.log_every', 'harmless'),
    ('train.progress_bar', 'harmless'),
    ('train.wandb_project', 'harmless'),
    ('train.wandb_mode', 'harmless'),
    ('train.checkpoint_every', 'harmless'),
    ('train.keep_checkpoints', 'harmless'),
    ('train.knn_every', 'harmless'),
    ('train.monitor_every', 'harmless'),
    ('train.final_eval', 'harmless'),
    ('train.preemption_sync_every', 'harmless'),
    ('train.nan_policy', 'harmless'),  # the non-finite stop message suggests changing it
    ('train.allow_config_change', 'harmless'),
    ('train.warm_start', 'harmless'),          # how to restore, not what to train
    ('train.ignore_quarantined', 'harmless'),
    ('train.max_consecutive_skips', 'harmless'),
    ('data.num_workers', 'harmless'),
    ('data.prefetch', 'harmless'),
    ('data.eval_split', 'harmless'),
    ('data.eval_train_split', 'harmless'),
    ('data.eval_crop_frac', 'harmless'),
    ('data.max_bad_fraction', 'harmless'),
    ('data.max_upscale', 'harmless'),   # a check, not a transform
    ('model.cpu_dots', 'harmless'),     # kernels computing the same function
    ('model.conv_impl', 'harmless'),
)


def field_kind(name: str) -> str:
  """'run' or 'harmless' for a dotted config field name (see FIELD_RULES)."""
  for pattern, kind in FIELD_RULES:
    if fnmatch.fnmatchcase(name, pattern):
      return kind
  return 'run'


def _plain(value):
  """JSON-compatible value (tuples -> lists, ConfigDicts -> dicts); others as their repr."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  return json.loads(json.dumps(value, default=repr))


def flatten(config) -> dict:
  """{dotted field: JSON-compatible value} of a ConfigDict or nested dict."""
  out = {}
  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, dict) and value:
        walk(value, f'{prefix}{key}.')
      else:
        out[f'{prefix}{key}'] = value
  walk(_plain(config), '')
  return out


def config_diff(saved, current) -> list[tuple[str, object, object]]:
  """[(field, saved value, current value)] of the fields that differ ('<absent>' if missing)."""
  a, b = flatten(saved), flatten(current)
  missing = '<absent>'
  return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
          if a.get(k, missing) != b.get(k, missing)]


def _atomic_write_text(path: epath.Path, text: str):
  """Writes ``text`` to a temporary sibling, then renames it over ``path`` (no torn file)."""
  tmp = path.parent / f'.{path.name}.tmp-{os.getpid()}'
  tmp.write_text(text)
  tmp.replace(path)   # overwrites (rename refuses an existing target on some backends)


def save_config(workdir, config, data_fingerprint: dict | None = None):
  """Writes the resolved ``config`` to ``WORKDIR/config.json`` (and the training source's
  fingerprint to ``WORKDIR/data_fingerprint.json``) atomically; the caller is process 0."""
  _atomic_write_text(as_path(workdir) / CONFIG_NAME,
                     json.dumps(_plain(config), indent=1, sort_keys=True))
  if data_fingerprint is not None:
    _atomic_write_text(as_path(workdir) / DATA_NAME, json.dumps(data_fingerprint, indent=1))


def _load_json(workdir, name) -> dict | None:
  path = as_path(workdir) / name
  if not path.exists():
    return None
  return json.loads(path.read_text())


def load_config(workdir) -> dict | None:
  """The saved config of ``workdir`` as a nested dict, or None when there is none."""
  return _load_json(workdir, CONFIG_NAME)


def check_data_fingerprint(workdir, current: dict | None, allow: bool):
  """Refuses (ConfigChangeError) to resume when the training source's record list differs
  from the one recorded with the first checkpoint: the resumed data order would silently
  change. ``allow`` (train.allow_config_change) turns the stop into a warning."""
  saved = _load_json(workdir, DATA_NAME)
  if saved is None or current is None or saved == current:
    return
  msg = (f'the training data of {workdir} changed since its checkpoints were written '
         f'({saved["num_records"]} -> {current["num_records"]} records, file list / labels '
         f'{"same" if saved.get("sha256") == current.get("sha256") else "differ"})')
  if not allow:
    raise ConfigChangeError(f'{msg}: the resumed data order would differ. Restore the data, use '
                            'a new --workdir, or pass --config.train.allow_config_change=True')
  logging.warning('%s; continuing (train.allow_config_change).', msg)


def check_resume(saved: dict | None, current, workdir) -> list[str]:
  """Compares the workdir's saved config with the one resuming it: prints every difference,
  raises ConfigChangeError for the 'run' ones unless ``train.allow_config_change``; returns the
  printed lines."""
  if saved is None:
    return []
  diff = config_diff(saved, current)
  lines = [f'{k}: {a!r} -> {b!r} ({field_kind(k)})' for k, a, b in diff]
  if lines:
    logging.warning('The config differs from the one saved in %s:\n  %s',
                    as_path(workdir) / CONFIG_NAME, '\n  '.join(lines))
  trajectory = [k for k, _, _ in diff if field_kind(k) == 'run']
  # A warm start (train.warm_start) is an explicit request to continue with a changed config.
  allowed = current.train.get('allow_config_change', False) or current.train.get('warm_start',
                                                                                   False)
  if trajectory and not allowed:
    raise ConfigChangeError(
        f'resuming {workdir} with a config that changes the trajectory '
        f'({", ".join(l for l in lines if l.endswith("(run)"))[:600]}); rerun with the saved '
        'values, use a new --workdir, or pass --config.train.allow_config_change=True to continue '
        'with the new ones (--config.train.warm_start=True when the optimizer state no longer '
        'fits)')
  return lines


def _tupled(value):
  if isinstance(value, list):
    return tuple(_tupled(v) for v in value)
  if isinstance(value, dict):
    return {k: _tupled(v) for k, v in value.items()}
  return value


def overridden(name: str, overrides) -> bool:
  """Whether field ``name`` is (inside) one of the dotted ``overrides``."""
  return any(name == o or name.startswith(o + '.') for o in overrides)


def reader_config(current, workdir, overrides=None):
  """The config that eval/export/viz use on ``workdir``: the saved one, so training overrides
  need not be repeated, with the 'harmless' fields (eval.*, export.*, mesh.*, evaluation
  splits...) taken from ``current``: all of them when ``overrides`` is None (a Python caller's
  config), else only those named in ``overrides`` (the ``--config.*`` fields given on the
  command line). 'run' fields of ``current`` that differ are ignored with a warning. Without a
  saved config (a run made before config.json existed), ``current`` with a warning."""
  saved = load_config(workdir)
  if saved is None:
    logging.warning('%s has no %s (a run from an older version?); using the config given on the '
                    'command line as is.', workdir, CONFIG_NAME)
    return current
  cur = flatten(current)
  ignored = [f'{k}: {a!r} (workdir) vs {b!r} (command line)' for k, a, b in
             config_diff(saved, current) if field_kind(k) == 'run' and k in cur
             and (overrides is None or overridden(k, overrides))]
  if ignored:
    logging.warning('Using the trained run\'s config from %s; these command-line values are '
                    'ignored:\n  %s', as_path(workdir) / CONFIG_NAME, '\n  '.join(ignored))
  out = ml_collections.ConfigDict(_tupled(saved))
  for key, value in cur.items():
    if field_kind(key) == 'harmless' and (overrides is None or overridden(key, overrides)):
      _set(out, key, _tupled(value))
  return out


def _set(config, dotted: str, value):
  *parents, leaf = dotted.split('.')
  node = config
  for p in parents:
    if p not in node:
      node[p] = ml_collections.ConfigDict()
    node = node[p]
  if leaf in node and node[leaf] is not None and value is not None:
    del node[leaf]  # the command line's type wins (e.g. a field that changed type upstream)
  node[leaf] = value
