"""The restorable run: config -> mesh, method, optimizer, abstract state, shardings, restore.

Every mode starts here: the trainer (train/loop.py adds the input pipeline, the compiled step
and the periodic actions), eval, export, viz, the memory check and the benchmarks. Nothing here
reads training data: the sample batch that shapes the state is zeros of the pipeline's record
spec (``batch_spec`` of the method's host transform), the same shapes and dtypes the pipeline
delivers.

    run = experiment.Experiment.for_reading(config, workdir)   # eval / export / viz
    state = run.restore_for_reading()                           # read-only, latest checkpoint
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ssl_jax import config as config_lib
from ssl_jax import methods
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import sharding
from ssl_jax.train import workdir as workdir_lib
from ssl_jax.train.state import TrainState


def create_train_state(method, tx, rng, sample_batch):
  params, buffers = method.init(rng, sample_batch)
  state = TrainState.create(params=params, tx=tx, buffers=buffers)
  # A strongly typed step (flax's is a weak-typed Python 0): a state restored from a checkpoint
  # then has the same signature, so fresh and resumed runs compile and run the same program.
  return state.replace(step=jnp.zeros((), jnp.int32))


def make_feature_fn(method, mesh):
  """jit of ``method.features`` with the batch split over the mesh and replicated output."""
  return jax.jit(lambda params, buffers, images: method.features(params, buffers, images),
                 out_shardings=sharding.replicated(mesh))


def sample_batch(method, batch_size: int) -> dict:
  """Zeros shaped like a global training batch of ``method`` (host numpy dtypes)."""
  return {k: np.zeros(shape, dtype)
          for k, (shape, dtype) in method.host_transform().batch_spec(batch_size).items()}


def build_method(config):
  """The config's method, wrapped with the online linear head when ``eval.online_linear``."""
  method = methods.build_method(config)
  if config.eval.get('online_linear', False):  # BYOL's stop-gradient linear head (methods/online.py)
    # Imported here: eval/ sits above train/ (this wrapper belongs below both, in methods/).
    from ssl_jax.methods import online as online_lib  # pylint: disable=g-import-not-at-top
    method = online_lib.OnlineLinear(method, config)
  return method


def resolved_config(config, method):
  """``config`` with the values a method derived from the training data written in (a memory
  bank's size, the online head's classes), so a reader rebuilds the same state without it."""
  c = config.copy_and_resolve_references()
  inner = getattr(method, 'inner', method)
  with c.unlocked():
    if 'bank_size' in c.method and not c.method.bank_size and hasattr(inner, 'bank_size'):
      c.method.bank_size = int(inner.bank_size)
    if c.eval.get('online_linear', False) and not c.eval.get('online_num_classes', 0):
      c.eval.online_num_classes = int(method.num_classes)
  return c


class Experiment:
  """Everything a restorable run is, built from (config, workdir): usable from Python and tests.

  Attributes: config, workdir (str; a URL stays a URL), mesh, method, tx, lr_schedule,
  abstract_state, state_sharding, init_fn (jitted), meta (what a checkpoint must match),
  feature_fn (jitted frozen-encoder features), checkpointer (None until opened).
  """

  def __init__(self, config, workdir, mesh=None):
    self.config = config
    self.workdir = str(workdir_lib.as_path(workdir))
    self.mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh)
    config_lib.validate(config, num_devices=self.mesh.size)
    self.method = build_method(config)
    self.tx, self.lr_schedule = self.method.build_optimizer(config.train.steps)
    sample = sample_batch(self.method, config.data.batch_size)
    init = lambda rng: create_train_state(self.method, self.tx, rng, sample)
    self.abstract_state = jax.eval_shape(init, jax.random.PRNGKey(config.seed))
    self.state_sharding = sharding.state_shardings(self.mesh, self.abstract_state, config.mesh)
    self.init_fn = jax.jit(init, out_shardings=self.state_sharding)
    self.meta = ckpt_lib.run_metadata(config, self.abstract_state)
    self.feature_fn = make_feature_fn(self.method, self.mesh)
    self.checkpointer = None

  @classmethod
  def for_reading(cls, config, workdir, mesh=None, overrides=None) -> 'Experiment':
    """The run of ``workdir`` for eval/export/viz: its saved config for everything that defines
    the trained model, ``config``'s eval/export/mesh settings (all of them, or those named in
    ``overrides``: workdir.reader_config). NoCheckpointError when there is no checkpoint."""
    check_has_checkpoint(workdir)
    return cls(workdir_lib.reader_config(config, workdir, overrides), workdir, mesh)

  # -- state --------------------------------------------------------------------------------------
  def initial_state(self):
    return self.init_fn(jax.random.PRNGKey(self.config.seed))

  def restore_target(self):
    """The abstract state with its shardings: what Orbax restores into."""
    return jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), self.abstract_state,
        self.state_sharding)

  def open_checkpointer(self, read_only: bool = True):
    self.checkpointer = ckpt_lib.Checkpointer(self.workdir, keep=self.config.train.keep_checkpoints,
                                              read_only=read_only)
    return self.checkpointer

  def restore_latest(self, warm_start=None, ignore_quarantined: bool = False):
    """(state, data_state, step) of the newest readable checkpoint of the opened checkpointer,
    or None when there is none (``warm_start``, ``ignore_quarantined``: Checkpointer.restore_latest)."""
    restored = self.checkpointer.restore_latest(self.restore_target(), self.meta,
                                                warm_start=warm_start,
                                                ignore_quarantined=ignore_quarantined)
    if restored is None:
      return None
    step, state, data_state = restored
    logging.info('Restored %s at step %d', self.checkpointer.directory, step)
    return state, data_state, step

  def restore_for_reading(self):
    """The latest checkpoint's state, opened read-only (a live trainer's in-progress save is
    left alone); NoCheckpointError when there is none."""
    self.open_checkpointer(read_only=True)
    try:
      restored = self.restore_latest()
    finally:
      self.checkpointer.close()
    if restored is None:
      raise workdir_lib.NoCheckpointError(
          f'--workdir={self.workdir} has no readable checkpoint; pretrain first (or check the '
          'path)')
    return restored[0]


def check_has_checkpoint(workdir):
  """NoCheckpointError unless ``WORKDIR/checkpoints`` holds a committed step."""
  directory = workdir_lib.as_path(workdir) / 'checkpoints'
  steps = [p for p in directory.iterdir() if p.name.isdigit()] if directory.exists() else []
  if not steps:
    raise workdir_lib.NoCheckpointError(
        f'--workdir={workdir} has no checkpoint (nothing in {directory}); pretrain first, or '
        'check the path')
