"""Preemption: SIGTERM -> finish the current step, write a final checkpoint, exit cleanly.

Preemptible TPU VMs, Spot GPUs, Slurm (``--signal``) and Kubernetes all send SIGTERM some seconds
before SIGKILL. ``PreemptionWatcher`` installs a handler that only sets a flag (nothing unsafe
happens inside the signal handler); the loop asks ``should_stop(step)`` after every step.

Single process: the flag is read every step (a Python bool; no device sync).

Multi-process: every process must stop after the *same* step, or the collective in the next step
(or in the checkpoint save) would hang. So the local flags are OR-ed across processes with
``multihost_utils.process_allgather`` every ``sync_every`` steps; each process makes this call at
the same steps because the schedule depends only on the step number. When ``jax.distributed`` runs
with its preemption service (TPU pods), JAX's own sync point
(``multihost_utils.reached_preemption_sync_point``) is honoured as well; it needs no collective.
A preempted run exits with status ``EXIT_PREEMPTED`` (143 = 128 + SIGTERM, what a shell reports for
a job killed by SIGTERM), so job scripts that retry on that status keep working, and the same
command resumes from the final checkpoint.
"""
from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from absl import logging

EXIT_PREEMPTED = 128 + signal.SIGTERM


def any_process(flag: bool) -> bool:
  """True if ``flag`` is true on any JAX process (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.asarray(bool(flag), np.int32))
  return bool(np.any(flags))


def barrier(name: str):
  """Waits for every process (no-op on one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


class PreemptionWatcher:
  """Turns SIGTERM (or the given signals) into a flag the training loop polls.

  Use as a context manager; the previous handlers are restored on exit. Installing handlers is
  only possible from the main thread; elsewhere the watcher is inert (``installed`` is False).
  """

  def __init__(self, signals=(signal.SIGTERM,), sync_every: int = 10):
    self.signals = tuple(signals)
    self.sync_every = max(1, int(sync_every))
    self.requested = False
    self.received = None
    self._previous = {}
    self.installed = False

  def _handler(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True
    self.received = signal.Signals(signum).name

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handler)
      self.installed = True
    return self

  def __exit__(self, *exc):
    for s, h in self._previous.items():
      signal.signal(s, h)
    self._previous.clear()
    self.installed = False
    return False

  def should_stop(self, step: int) -> bool:
    """Whether the run must checkpoint and stop after ``step`` (the same answer on every process)."""
    if jax.process_count() == 1:
      return self.requested
    stop = False
    try:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      stop = multihost_utils.reached_preemption_sync_point(step)
    except (RuntimeError, AttributeError):  # preemption service not running
      pass
    if step % self.sync_every == 0:
      stop = any_process(self.requested) or stop
    if stop and not self.requested:
      logging.warning('Another process was asked to stop; stopping after step %d.', step)
    return stop
