"""The pretraining loop, top to bottom: mesh -> input -> method & optimizer -> shard/restore ->
compiled step -> loop (metrics, progress, online kNN, checkpoints) -> final evaluation.

The loop knows nothing of any particular method: everything method-specific sits behind the
Method interface (ssl_jax/methods/base.py).
"""
from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ssl_jax import config as config_lib
from ssl_jax import methods
from ssl_jax import paths
from ssl_jax.data import pipeline, sources
from ssl_jax.eval import features as features_lib
from ssl_jax.eval import knn
from ssl_jax.eval import online as online_lib
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import preemption
from ssl_jax.train import sharding, step as step_lib
from ssl_jax.train.state import TrainState


class NonFiniteError(RuntimeError):
  """Raised under ``train.nan_policy='stop'`` when a step had a non-finite loss or gradient."""


def _is_main() -> bool:
  return jax.process_index() == 0


def _summary_writer(workdir):
  if not _is_main():
    return None
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  # tensorboardX writes gs:// itself (google-cloud-storage) and local paths; one string for both.
  return SummaryWriter(str(paths.as_path(workdir) / 'tensorboard'))


def create_train_state(method, tx, rng, sample_batch):
  params, buffers = method.init(rng, sample_batch)
  state = TrainState.create(params=params, tx=tx, buffers=buffers)
  # A strongly typed step (flax's is a weak-typed Python 0): a state restored from a checkpoint
  # then has the same signature, so fresh and resumed runs compile and run the same program.
  return state.replace(step=jnp.zeros((), jnp.int32))


def jit_train_step(method, config, mesh, state_sharding, lr_schedule=None):
  """The method's generic train step, jitted over ``mesh``: state in ``state_sharding`` (donated),
  batch split over the data axes, metrics replicated."""
  train_step = step_lib.make_train_step(method, config.seed, lr_schedule,
                                        accum_steps=config.optim.get('grad_accum_steps', 1))
  return jax.jit(train_step, in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
                 out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=(0,))


class Experiment:
  """Everything a run needs, built from (config, workdir): usable from Python and tests.

  Attributes: config, workdir, mesh, method, train_ds (grain MapDataset), tx, lr_schedule,
  abstract_state, state_sharding, init_fn (jitted), step_fn (jitted), checkpointer.
  """

  def __init__(self, config, workdir: str, mesh=None, train_data=None):
    self.config = config
    self.workdir = paths.as_path(workdir)   # gs://... stays a URL (os.path.abspath would not)
    if self.workdir.exists() and not self.workdir.is_dir():
      raise ValueError(f'--workdir={workdir} exists and is not a directory')
    ckpt_lib.check_workdir(self.workdir)
    self.mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh)
    config_lib.validate(config, num_devices=self.mesh.size)
    self.method = methods.build_method(config)
    if config.eval.get('online_linear', False):  # BYOL's stop-gradient linear head (eval/online.py)
      self.method = online_lib.OnlineLinear(self.method, config)

    # -- input ----------------------------------------------------------------------------------
    # ``train_data``: any iterable of numpy batches (see pipeline.IterableInput) replaces the
    # grain pipeline over config.data; evaluation still reads config.data.
    if train_data is None:
      self.train_source = sources.get_source(config.data, config.data.train_split)
      self.train_ds = pipeline.train_dataset(
          self.train_source, self.method.crop_specs(), global_batch=config.data.batch_size,
          seed=config.seed, process_index=jax.process_index(),
          process_count=jax.process_count())
      local_sample = self.train_ds[0]
      self.train_input = None
    else:
      self.train_source = self.train_ds = None
      self.train_input = pipeline.IterableInput(
          train_data, self.method.crop_specs(),
          local_batch=config.data.batch_size // jax.process_count(), seed=config.seed,
          process_index=jax.process_index())
      local_sample = self.train_input.peek()
    if config.train.final_eval or config.train.knn_every:
      sources.check_eval_sources(config.data)  # a missing/unlabelled eval split stops here
    sample = jax.tree_util.tree_map(
        lambda x: np.zeros((config.data.batch_size,) + x.shape[1:], x.dtype), local_sample)

    # -- method & optimizer ---------------------------------------------------------------------
    self.tx, self.lr_schedule = self.method.build_optimizer(config.train.steps)
    init = lambda rng: create_train_state(self.method, self.tx, rng, sample)
    self.abstract_state = jax.eval_shape(init, jax.random.PRNGKey(config.seed))
    self.state_sharding = sharding.state_shardings(self.mesh, self.abstract_state,
                                                  config.mesh)
    self.init_fn = jax.jit(init, out_shardings=self.state_sharding)
    self.meta = ckpt_lib.run_metadata(config, self.abstract_state)

    # -- compiled step ----------------------------------------------------------------------------
    self.step_fn = jit_train_step(self.method, config, self.mesh, self.state_sharding,
                                  self.lr_schedule)
    self.feature_fn = features_lib.make_feature_fn(self.method, self.mesh)
    self.checkpointer = None

  def train_iterator(self):
    """The checkpointable (get_state/set_state) iterator of this process's training batches."""
    if self.train_input is not None:
      return self.train_input
    return pipeline.make_iterator(self.train_ds, self.config.data.num_workers,
                                  self.config.data.prefetch)

  # -- state --------------------------------------------------------------------------------------
  def initial_state(self):
    return self.init_fn(jax.random.PRNGKey(self.config.seed))

  def restore_or_init(self):
    """(state, data_state or None): the latest checkpoint in the workdir, else a fresh state."""
    self.checkpointer = ckpt_lib.Checkpointer(self.workdir, keep=self.config.train.keep_checkpoints)
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), self.abstract_state,
        self.state_sharding)
    # The newest readable checkpoint; corrupt ones are reported, moved aside and skipped.
    restored = self.checkpointer.restore_latest(abstract, self.meta)
    if restored is None:
      return self.initial_state(), None
    latest, state, data_state = restored
    logging.info('Resumed from %s at step %d', self.checkpointer.directory, latest)
    return state, data_state

  def save(self, state, iterator, force=False):
    step = int(jax.device_get(state.step))
    self.checkpointer.save(step, state, iterator.get_state(), self.meta, force=force)

  # -- evaluation ----------------------------------------------------------------------------------
  def knn_eval(self, state) -> float:
    """Weighted kNN top-1 of the current encoder: memory bank = eval_train_split, queries = eval_split."""
    c = self.config
    kw = dict(mesh=self.mesh, image_size=c.data.image_size, batch_size=c.eval.batch_size,
              crop_frac=c.data.eval_crop_frac)
    train_src = sources.get_source(c.data, c.data.eval_train_split)
    test_src = sources.get_source(c.data, c.data.eval_split)
    f_tr, y_tr = features_lib.extract_features(self.feature_fn, state.params, state.buffers,
                                               train_src, **kw)
    f_te, y_te = features_lib.extract_features(self.feature_fn, state.params, state.buffers,
                                               test_src, **kw)
    return knn.knn_top1(f_tr, y_tr, f_te, y_te, k=c.eval.knn_k,
                        temperature=c.eval.knn_temperature, num_classes=train_src.num_classes)


def _progress(total, initial, enabled):
  if not (enabled and _is_main()):
    return None
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=initial, dynamic_ncols=True, unit='step')


def train_and_evaluate(config, workdir: str, mesh=None, train_data=None) -> dict:
  """Pretrains ``config.method`` for ``config.train.steps`` steps (resuming from ``workdir``),
  then evaluates; returns (and writes to ``workdir/summary.json``) the run summary.

  ``train_data``: optionally any iterable of numpy batches (e.g. ``tfds.as_numpy`` of a tf.data
  pipeline) to train on instead of ``config.data`` (see ``pipeline.IterableInput``).
  """
  exp = Experiment(config, workdir, mesh, train_data)
  c = config
  state, data_state = exp.restore_or_init()
  iterator = exp.train_iterator()
  if data_state is not None:
    iterator.set_state(data_state)
  start = int(jax.device_get(state.step))
  writer = _summary_writer(exp.workdir)
  bar = _progress(c.train.steps, start, c.train.progress_bar)
  history, last_metrics = [], {}
  # history.json spans every session of the run: the entries of earlier sessions up to the step
  # resumed from (later ones belong to steps that are being redone), then this session's, written
  # before each checkpoint so that a kill leaves no gap in it.
  history_path = paths.as_path(exp.workdir) / 'history.json'
  prior = [h for h in (paths.read_json(history_path, []) if _is_main() else [])
           if h.get('step', 0) <= start]

  def write_history():
    if _is_main():
      paths.write_json_atomic(history_path, prior + history, indent=1)

  t_first, n_timed = None, 0
  # Reliability: SIGTERM -> checkpoint + stop; non-finite steps checked at log/checkpoint times.
  watcher = preemption.PreemptionWatcher(sync_every=c.train.get('preemption_sync_every', 10))
  watcher.__enter__()
  preempted_at, unchecked, skipped_seen = None, [], int(jax.device_get(state.skipped))

  def check_nonfinite():
    """Under nan_policy='stop', raises at the first skipped step since the last check (the
    per-step flags are fetched only here, so there is no extra host sync per step)."""
    nonlocal skipped_seen
    flags = [(s, int(v)) for s, v in jax.device_get(unchecked)]
    unchecked.clear()
    bad = [s for s, v in flags if v]
    if bad and c.train.nan_policy == 'stop':
      exp.checkpointer.wait()
      raise NonFiniteError(
          f'non-finite loss or gradient at step {bad[0]} (update skipped; nan_policy=stop); last '
          f'good checkpoint: {exp.checkpointer.last_good()}. Lower optim.lr, enable '
          'optim.clip_grad_norm or set train.nan_policy=skip, then rerun the same command.')
    skipped = int(jax.device_get(state.skipped))
    if skipped > skipped_seen:
      logging.warning('%d update(s) skipped because of a non-finite loss or gradient (%d in '
                      'total) by step %d.', skipped - skipped_seen, skipped, done)
      skipped_seen = skipped

  try:
    for step in range(start, c.train.steps):
      batch = sharding.global_batch(exp.mesh, next(iterator))
      state, metrics = exp.step_fn(state, batch)
      done = step + 1
      unchecked.append((done, metrics['nonfinite']))
      if t_first is None:
        jax.block_until_ready(state.step)  # exclude compilation from images/s
        t_first = time.perf_counter()
      else:
        n_timed += 1
      if done % c.train.log_every == 0 or done == c.train.steps:
        last_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        elapsed = time.perf_counter() - t_first
        ips = n_timed * c.data.batch_size / elapsed if n_timed and elapsed > 0 else 0.0
        last_metrics['images_per_sec'] = ips
        history.append({'step': done, **last_metrics})
        check_nonfinite()
        if writer:
          for k, v in last_metrics.items():
            writer.add_scalar(f'train/{k}', v, done)
        if bar is not None:
          bar.set_postfix(loss=f"{last_metrics['loss']:.4f}", img_s=f'{ips:.0f}')
      if bar is not None:
        bar.update(1)
      if c.train.knn_every and done % c.train.knn_every == 0 and done != c.train.steps:
        acc = exp.knn_eval(state)
        history.append({'step': done, 'knn_top1': acc})
        if writer:
          writer.add_scalar('eval/knn_top1', acc, done)
      if done % c.train.checkpoint_every == 0 or done == c.train.steps:
        check_nonfinite()
        write_history()
        exp.save(state, iterator)
      if watcher.should_stop(done):
        check_nonfinite()
        write_history()
        exp.save(state, iterator, force=True)
        preempted_at = done
        break
  finally:
    watcher.__exit__(None, None, None)
    if bar is not None:
      bar.close()
    # While another error propagates, a failing background save is logged, not raised over it.
    exp.checkpointer.close(raise_errors=sys.exc_info()[0] is None)
  if preempted_at is not None:
    logging.warning('Stopped by %s after step %d; checkpoint saved in %s. Rerun the same command '
                    'to resume.', watcher.received or 'a preemption notice', preempted_at,
                    exp.checkpointer.directory)
    return {'preempted': True, 'stopped_at_step': preempted_at, 'resumed_from_step': start,
            'steps': c.train.steps, 'checkpoint': exp.checkpointer.last_good()}
  steps_run = c.train.steps - start
  if 'loss' not in last_metrics:  # nothing left to run (resumed at the last step): the logged ones
    last_metrics = next((h for h in reversed(prior) if 'loss' in h), {})
  summary = {
      'method': c.method.name, 'backbone': c.model.backbone, 'dataset': c.data.name,
      'steps': c.train.steps, 'resumed_from_step': start, 'global_batch': c.data.batch_size,
      'devices': exp.mesh.size, 'final_loss': last_metrics.get('loss'),
      'images_per_sec': last_metrics.get('images_per_sec'),
      'skipped_updates': int(jax.device_get(state.skipped)), 'steps_run': steps_run,
  }
  if c.train.final_eval:
    summary['knn_top1'] = exp.knn_eval(state)
    summary['knn_top1_random_init'] = exp.knn_eval(exp.initial_state())
    err, err0 = 1 - summary['knn_top1'], 1 - summary['knn_top1_random_init']
    summary['knn_error_ratio'] = err / err0 if err0 > 0 else None
    if writer:
      writer.add_scalar('eval/knn_top1', summary['knn_top1'], c.train.steps)
  if writer:
    writer.close()
  if _is_main():
    paths.write_json_atomic(paths.as_path(exp.workdir) / 'summary.json', summary)
  write_history()
  return summary
