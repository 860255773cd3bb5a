"""Where scalars go: TensorBoard (always, ``WORKDIR/tensorboard``) and, when
``config.train.wandb_project`` is set, Weights & Biases.

W&B is optional (``pip install wandb``); ``config.train.wandb_mode`` is ``'online'``,
``'offline'`` (a local run folder under ``WORKDIR/wandb``, synced later with ``wandb sync``) or
``'disabled'``. The W&B run id is derived from the workdir, so a resumed run (and the eval / export
of it) keeps logging into the same W&B run instead of starting a new one. Only process 0 writes.
"""
from __future__ import annotations

import hashlib
import sys

from ssl_jax import paths


def _summary_writer_class():
  """``tensorboardX.SummaryWriter``, imported without PyTorch: tensorboardX imports torch when it
  is installed, only to accept torch tensors (~2 s and ~300 MB in every training process; we log
  Python floats). A process that already imported torch keeps it."""
  if 'tensorboardX' in sys.modules or 'torch' in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    return SummaryWriter
  sys.modules['torch'] = None   # `import torch` raises ImportError, which tensorboardX expects
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules['torch']
  return SummaryWriter


class Summaries:
  """``add_scalar(tag, value, step)`` / ``close()`` to TensorBoard and optionally W&B."""

  def __init__(self, workdir, config=None):
    SummaryWriter = _summary_writer_class()  # pylint: disable=invalid-name
    # tensorboardX writes gs:// itself (google-cloud-storage) and local paths; one string for both.
    self._tb = SummaryWriter(str(paths.as_path(workdir) / 'tensorboard'))
    self._wandb = _wandb_run(workdir, config) if config is not None else None

  def add_scalar(self, tag: str, value: float, step: int):
    self._tb.add_scalar(tag, value, step)
    if self._wandb is not None:
      self._wandb.log({tag: float(value)}, step=int(step))

  def close(self):
    self._tb.close()
    if self._wandb is not None:
      self._wandb.finish()
      self._wandb = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def wandb_run_id(workdir) -> str:
  """A stable W&B run id per workdir (resume and eval write into the same W&B run)."""
  return hashlib.sha1(str(paths.as_path(workdir)).encode()).hexdigest()[:16]


def _wandb_run(workdir, config):
  train = config.get('train', {})
  project = train.get('wandb_project', '')
  if not project:
    return None
  try:
    import wandb  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("config.train.wandb_project is set but wandb is not installed: "
                      "pip install wandb (or leave train.wandb_project='')") from e
  directory = paths.as_path(workdir)
  local = not str(directory).startswith(('gs://', 's3://'))
  return wandb.init(project=project, id=wandb_run_id(workdir), resume='allow',
                    mode=train.get('wandb_mode', 'online'),
                    dir=str(directory) if local else None,
                    config=config.to_dict() if hasattr(config, 'to_dict') else dict(config),
                    name=str(directory.name), reinit='finish_previous')
