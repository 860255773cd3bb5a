"""One path type for every user path (workdir, data folders, export dir, TensorBoard, JSON outputs).

A user path is a string that is either a local path or a URL (``gs://bucket/run``, ``s3://...``).
:func:`as_path` turns it into an ``etils.epath.Path`` -- what Orbax uses -- which keeps a URL a URL
(``os.path.abspath('gs://b/run')`` is ``$PWD/gs:/b/run``, a local folder) and makes a local path
absolute. ``gs://`` goes through fsspec's gcsfs (``pip install gcsfs``; see docs/scaling.md).

Outputs are written so that a killed or retried process never leaves a half-written file where a
reader expects a whole one: :func:`write_json_atomic` and :func:`replace_dir`.
"""
from __future__ import annotations

import json
import os
import uuid

from etils import epath

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """Whether ``path`` names an object store (``scheme://...``) rather than a local file."""
  return '://' in os.fspath(path)


def as_path(path: PathLike) -> epath.Path:
  """``path`` as an ``epath.Path``: a URL stays a URL, a local path becomes absolute (``~``
  expanded), so that the same string means the same place in every process and after a chdir."""
  if isinstance(path, epath.Path) and (is_remote(path) or path.is_absolute()):
    return path
  s = os.fspath(path)
  if is_remote(s):
    return epath.Path(s)
  return epath.Path(os.path.abspath(os.path.expanduser(s)))


def write_text_atomic(path: PathLike, text: str) -> epath.Path:
  """Writes ``text`` to ``path`` so that a reader sees the old file or the new one, never a
  truncated one (a kill mid-write keeps the previous content).

  Local: a temporary sibling, fsync, then ``os.replace``. Object stores publish an object only
  when its upload completes, so there the one write is already atomic.
  """
  path = as_path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(path):
    path.write_text(text)
    return path
  tmp = path.parent / f'.{path.name}.tmp-{uuid.uuid4().hex[:8]}'
  try:
    with open(tmp, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def write_json_atomic(path: PathLike, obj, indent: int = 2) -> epath.Path:
  """``json.dump(obj)`` to ``path`` atomically (see :func:`write_text_atomic`)."""
  return write_text_atomic(path, json.dumps(obj, indent=indent) + '\n')


def read_json(path: PathLike, default=None):
  """The JSON value in ``path``, or ``default`` when the file does not exist."""
  path = as_path(path)
  if not path.exists():
    return default
  return json.loads(path.read_text())


def temp_sibling(path: PathLike, tag: str) -> epath.Path:
  """``path``'s sibling ``.NAME.TAG`` (for a directory to be swapped in with
  :func:`replace_dir`); ``tag`` must be the same in every process of a multi-process job."""
  path = as_path(path)
  return path.parent / f'.{path.name}.{tag}'


def replace_dir(new: PathLike, dst: PathLike) -> epath.Path:
  """Moves the complete directory ``new`` to ``dst``, replacing what ``dst`` held.

  The previous ``dst`` is first renamed aside and deleted only after ``new`` is in place, so a
  kill at any moment leaves a complete directory under ``dst`` or under ``.DST.old-*`` (the
  next call cleans the latter). On object stores a rename is a copy + delete, not atomic; the
  order still keeps one complete copy at every moment.
  """
  new, dst = as_path(new), as_path(dst)
  for stale in dst.parent.glob(f'.{dst.name}.old-*'):
    stale.rmtree(missing_ok=True)
  old = None
  if dst.exists():
    old = dst.parent / f'.{dst.name}.old-{uuid.uuid4().hex[:8]}'
    dst.rename(old)
  new.rename(dst)
  if old is not None:
    old.rmtree(missing_ok=True)
  return dst


def walk(root: PathLike):
  """``os.walk(root, followlinks=True)`` for a local path or a URL: top-down
  ``(dirpath, dirnames, filenames)``; pruning ``dirnames`` in place skips those folders.

  A bucket is listed with one recursive listing (``fsspec``'s ``find``) instead of a request per
  folder and file, which matters for image folders of a million files.
  """
  s = os.fspath(root)
  if not is_remote(s):
    yield from os.walk(s, followlinks=True)
    return
  import fsspec  # pylint: disable=g-import-not-at-top
  scheme = s.split('://', 1)[0] + '://'
  fs, base = fsspec.core.url_to_fs(s)
  base = base.rstrip('/')
  children = {}
  for name, info in fs.find(base, withdirs=True, detail=True).items():
    name = name.rstrip('/')
    if name == base or '/' not in name:
      continue
    parent, leaf = name.rsplit('/', 1)
    dirs, files = children.setdefault(parent, ([], []))
    (dirs if info.get('type') == 'directory' else files).append(leaf)
  todo = [base]
  while todo:
    d = todo.pop(0)
    dirs, files = children.get(d, ([], []))
    dirs = sorted(set(dirs))
    yield scheme + d, dirs, sorted(set(files))
    todo[:0] = [f'{d}/{n}' for n in dirs]
