"""The pretraining loop: the workdir's lock -> the restorable run (train/experiment.py) plus the
input pipeline and compiled step (Trainer) -> restore, checked against the saved config ->
loop (metrics, progress, online kNN, checkpoints, preemption) -> final evaluation.

The loop knows nothing of any particular method: everything method-specific sits behind the
Method interface (ssl_jax/methods/base.py).
"""
from __future__ import annotations

import sys
import time

import jax
import numpy as np
from absl import logging

from ssl_jax import config as config_lib
from ssl_jax import paths
from ssl_jax.data import modality, pipeline, sources
from ssl_jax.eval import knn, monitors
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import summaries
from ssl_jax.train import experiment as experiment_lib
from ssl_jax.train import preemption
from ssl_jax.train import sharding, step as step_lib
from ssl_jax.train import workdir as workdir_lib


class NonFiniteError(RuntimeError):
  """Raised under ``train.nan_policy='stop'`` when a step had a non-finite loss or gradient."""


def _is_main() -> bool:
  return jax.process_index() == 0


def _summary_writer(workdir, config=None):
  """TensorBoard (and W&B when config.train.wandb_project is set) on process 0, else None."""
  if not _is_main():
    return None
  return summaries.Summaries(workdir, config)


# Kept under their old names for callers of the loop (tests, notebooks).
create_train_state = experiment_lib.create_train_state
jit_train_step = step_lib.jit_train_step


class Trainer(experiment_lib.Experiment):
  """The restorable run (train/experiment.py) plus what only training needs: the input
  pipeline, the compiled step, the workdir's lock and saved config, and saving.

  Attributes beyond Experiment's: train_source, train_ds (grain MapDataset) or train_input
  (pipeline.IterableInput), step_fn (jitted).
  """

  def __init__(self, config, workdir: str, mesh=None, train_data=None):
    path = paths.as_path(workdir)   # gs://... stays a URL (os.path.abspath would not)
    if path.exists() and not path.is_dir():
      raise ValueError(f'--workdir={workdir} exists and is not a directory')
    ckpt_lib.check_workdir(str(workdir))
    super().__init__(config, workdir, mesh)
    # ``train_data``: any iterable of numpy batches (see pipeline.IterableInput) replaces the
    # grain pipeline over config.data; evaluation still reads config.data.
    if train_data is None:
      self.train_source = sources.get_source(config.data, config.data.train_split)
      self.train_ds = pipeline.train_dataset(
          self.train_source, self.method.host_transform(), global_batch=config.data.batch_size,
          seed=config.seed, process_index=jax.process_index(),
          process_count=jax.process_count())
      self.train_input = None
    else:
      if self.method.modality != 'image':
        raise ValueError(f'train_data (an iterable of batches) feeds image methods only; '
                         f'{config.method.name} reads {self.method.modality}: leave train_data '
                         'out and set config.data')
      self.train_source = self.train_ds = None
      self.train_input = pipeline.IterableInput(
          train_data, self.method.crop_specs(),
          local_batch=config.data.batch_size // jax.process_count(), seed=config.seed,
          process_index=jax.process_index())
    check_batch_spec(self.train_ds[0] if train_data is None else self.train_input.peek(),
                     self.method, config.data.batch_size // jax.process_count())
    if config.train.final_eval or config.train.knn_every:
      sources.check_eval_sources(config.data)  # a missing/unlabelled eval split stops here
    self.step_fn = step_lib.jit_train_step(self.method, config, self.mesh, self.state_sharding,
                                           self.lr_schedule)
    self.resolved_config = experiment_lib.resolved_config(config, self.method)
    self.data_fingerprint = (sources.fingerprint(self.train_source)
                             if self.train_source is not None else None)
    self._config_saved = False

  def train_iterator(self):
    """The checkpointable (get_state/set_state) iterator of this process's training batches."""
    if self.train_input is not None:
      return self.train_input
    return pipeline.make_iterator(self.train_ds, self.config.data.num_workers,
                                  self.config.data.prefetch)

  def restore_or_init(self):
    """(state, data_state or None): the latest checkpoint in the workdir, else a fresh state.
    A resumed run's config is compared with the saved one first (workdir.check_resume)."""
    self.open_checkpointer(read_only=False)
    self._config_saved = False  # a new session writes config.json with its first checkpoint
    if self.checkpointer.committed_steps():
      workdir_lib.check_resume(workdir_lib.load_config(self.workdir), self.resolved_config,
                               self.workdir)
      workdir_lib.check_data_fingerprint(self.workdir, self.data_fingerprint,
                                         self.config.train.get('allow_config_change', False))
    # Corrupt checkpoints are moved aside and skipped; one that does not fit this config stops
    # the run unless train.warm_start (checkpoint.py).
    restored = self.restore_latest(
        warm_start=self.initial_state if self.config.train.get('warm_start', False) else None,
        ignore_quarantined=self.config.train.get('ignore_quarantined', False))
    if restored is None:
      return self.initial_state(), None
    state, data_state, _ = restored
    return state, data_state

  def save(self, state, iterator, force=False):
    """Starts a checkpoint save; the first save of a session also writes WORKDIR/config.json
    and the training source's fingerprint (workdir.save_config)."""
    step = int(jax.device_get(state.step))
    self.checkpointer.save(step, state, iterator.get_state(), self.meta, force=force)
    if not self._config_saved and _is_main():
      workdir_lib.save_config(self.workdir, self.resolved_config, self.data_fingerprint)
    self._config_saved = True

  def knn_eval(self, state) -> float:
    """Weighted kNN top-1 of the current encoder (eval/knn.py: memory bank = eval_train_split,
    queries = eval_split) at ``eval.knn_k``."""
    scores, _ = knn.knn_eval(self.feature_fn, state.params, state.buffers, self.config,
                             self.mesh)
    return scores[self.config.eval.knn_k]

  def monitor(self, state) -> dict:
    """Label-free monitors (eval/monitors.py) of the current encoder on a fixed subset of the
    training images; {} when training reads an iterable (no random-access source)."""
    if self.train_source is None:
      return {}
    c = self.config
    z1, z2 = monitors.monitor_features(
        self.feature_fn, state.params, state.buffers, self.train_source, mesh=self.mesh,
        image_size=c.data.image_size, batch_size=c.eval.batch_size,
        crop_frac=c.data.eval_crop_frac, seed=c.seed, view=modality.eval_view(c.data))
    return monitors.label_free_metrics(z1, z2)


def check_batch_spec(local_batch: dict, method, local_size: int):
  """The state was shaped from ``pipeline.batch_spec`` (no data read); a real batch that differs
  would recompile or fail inside the step, so it stops here naming the key."""
  want = method.host_transform().batch_spec(local_size)
  got = {k: (tuple(np.shape(v)), np.asarray(v).dtype) for k, v in local_batch.items()}
  for key in sorted(set(want) | set(got)):
    w = (tuple(want[key][0]), np.dtype(want[key][1])) if key in want else None
    if got.get(key) != w:
      raise ValueError(f'the training batch\'s {key!r} is {got.get(key)} (shape, dtype); the '
                       f'method expects {w}: give ' + ('uint8 NHWC views of the crop sizes'
                                       if method.modality == 'image' else
                                       f'{method.modality} records of these shapes'))


Experiment = Trainer  # the name tests and notebooks know; readers use experiment.Experiment


def _monitor_due(t, done: int) -> bool:
  """Monitors run every train.monitor_every steps, not at the last step (the summary's own run
  covers it)."""
  every = t.get('monitor_every', 0)
  return bool(every) and done % every == 0 and done != t.steps


def _log_monitors(exp, state, done: int, writer) -> dict:
  """The monitors of ``state`` to TensorBoard (monitor/*), with a warning on collapse."""
  metrics = exp.monitor(state)
  if writer:
    for k, v in metrics.items():
      writer.add_scalar(f'monitor/{k}', v, done)
  warning = monitors.collapse_warning(metrics) if metrics else ''
  if warning and _is_main():
    logging.warning('step %d: %s', done, warning)
    _say(f'warning at step {done}: {warning}')
  return metrics


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
  lock = take_workdir_lock(workdir)
  try:
    config = resolve_run_length(config, workdir, mesh, train_data)
    return _train_and_evaluate(Experiment(config, workdir, mesh, train_data), config)
  finally:
    lock.release()


def _say(msg: str):
  if _is_main():
    print(f'ssl_jax: {msg}', file=sys.stderr, flush=True)


def resolve_run_length(config, workdir, mesh=None, train_data=None):
  """``config`` with ``train.steps`` resolved from ``train.epochs`` (steps = ceil(epochs x training
  images / batch)) and/or capped by ``train.budget_minutes`` (a few timed steps: steps =
  config.steps_for_budget), ``train.steps_from`` recording which; warm-up longer than a tenth of
  the run is cut to a tenth. Unchanged when ``train.steps`` is given alone. The resolved config is
  what the run saves, so a resume (or eval) reuses its steps instead of re-timing."""
  t = config.train
  epochs, budget = t.get('epochs', 0) or 0, t.get('budget_minutes', 0) or 0
  if t.get('steps_from', '') or not (epochs or budget):
    return config
  config_lib.check_run_length(t)
  c = config.copy_and_resolve_references()
  steps, steps_from = t.steps or None, ''
  if epochs:
    if train_data is not None:
      raise ValueError('config.train.epochs needs the size of config.data; with train_data given, '
                       'set config.train.steps instead')
    n = len(sources.get_source(c.data, c.data.train_split))
    steps, steps_from = config_lib.steps_for_epochs(epochs, n, c.data.batch_size), 'epochs'
    _say(f'train.epochs={epochs:g} x {n} images / batch {c.data.batch_size} -> {steps} steps')
  if budget:
    if jax.process_count() > 1:
      raise ValueError('config.train.budget_minutes sizes single-process runs; on several '
                       'processes set config.train.steps or config.train.epochs')
    saved = (workdir_lib.load_config(workdir) or {}).get('train', {})
    if saved.get('budget_minutes') == budget and saved.get('steps_from') == 'budget_minutes':
      fit = int(saved['steps'])
      _say(f'train.budget_minutes={budget:g}: {fit} steps, as sized when this run started')
    else:
      fit = _steps_in_budget(c, workdir, mesh, train_data, budget)
    if steps is None or fit <= steps:
      _say(f'train.budget_minutes={budget:g} caps the run at {fit} steps')
      steps = fit
    steps_from = 'budget_minutes'  # so a resume reuses the steps instead of timing again
  with c.unlocked():
    c.train.steps, c.train.steps_from = int(steps), steps_from
    if c.optim.warmup_steps > steps // 10:
      c.optim.warmup_steps = steps // 10
  return c


def _steps_in_budget(c, workdir, mesh, train_data, budget: float) -> int:
  """Times the real step (data pipeline included) for a few seconds and sizes the run to
  ``budget`` minutes (config.steps_for_budget); the measurement counts against the budget."""
  t0 = time.perf_counter()
  probe = c.copy_and_resolve_references()
  with probe.unlocked():
    probe.train.steps, probe.train.steps_from = 10**6, 'budget_minutes'
  exp = Trainer(probe, workdir, mesh, train_data)
  state, it = exp.initial_state(), exp.train_iterator()
  state, _ = exp.step_fn(state, sharding.global_batch(exp.mesh, next(it)))
  jax.block_until_ready(state.step)
  compile_s = time.perf_counter() - t0
  times = []
  while len(times) < 3 or (sum(times) < 5.0 and len(times) < 20):
    t1 = time.perf_counter()
    state, _ = exp.step_fn(state, sharding.global_batch(exp.mesh, next(it)))
    jax.block_until_ready(state.step)
    times.append(time.perf_counter() - t1)
  per_step = float(np.median(times))
  spent = time.perf_counter() - t0
  steps = config_lib.steps_for_budget(budget, per_step, spent, compile_s)
  _say(f'train.budget_minutes={budget:g}: {per_step:.2f} s/step (median of {len(times)}), '
       f'{spent:.0f} s spent measuring, {compile_s:.0f} s to compile -> {steps} steps '
       f'({config_lib.BUDGET_RESERVE:.0%} kept for evaluation)')
  return steps


def take_workdir_lock(workdir) -> workdir_lib.WorkdirLock:
  """The workdir's one-writer lock, taken by process 0; every process raises if it is held."""
  path = paths.as_path(workdir)
  if path.exists() and not path.is_dir():
    raise ValueError(f'--workdir={workdir} exists and is not a directory')
  ckpt_lib.check_workdir(str(workdir))  # a clear message for an unwritable workdir, first
  lock = workdir_lib.WorkdirLock(workdir, is_writer=_is_main())
  error = None
  try:
    lock.acquire()
  except workdir_lib.WorkdirLockedError as e:
    error = e
  if preemption.any_process(error is not None):
    raise error or workdir_lib.WorkdirLockedError(
        f'{workdir} is in use by another trainer (see process 0\'s error)')
  return lock


def _train_and_evaluate(exp: Trainer, c) -> dict:
  """train_and_evaluate once the workdir is held."""
  state, data_state = exp.restore_or_init()
  iterator = exp.train_iterator()
  if data_state is not None:
    iterator.set_state(data_state)
  start = int(jax.device_get(state.step))
  writer = _summary_writer(exp.workdir, c)
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
  streak = []  # the steps of the current run of consecutive skipped updates (counted on the host)

  def check_nonfinite():
    """Under nan_policy='stop', raises at the first skipped step since the last check; under
    'skip', once train.max_consecutive_skips updates in a row were skipped (the per-step flags
    are fetched only here, so there is no extra host sync per step)."""
    nonlocal skipped_seen
    flags = [(s, int(v)) for s, v in jax.device_get(unchecked)]
    unchecked.clear()
    bad = [s for s, v in flags if v]
    if bad and c.train.nan_policy == 'stop':
      exp.checkpointer.wait()
      raise NonFiniteError(
          f'non-finite loss or gradient at step {bad[0]} (update skipped; nan_policy=stop); last '
          f'good checkpoint: {exp.checkpointer.last_good()}. Lower optim.lr or enable '
          'optim.clip_grad_norm (with --config.train.allow_config_change=True), or set '
          'train.nan_policy=skip, then rerun the same command.')
    limit = c.train.get('max_consecutive_skips', 0)
    for s, v in flags:
      streak[:] = streak + [s] if v else []
      if limit and len(streak) >= limit:
        exp.checkpointer.wait()
        raise NonFiniteError(
            f'{len(streak)} consecutive updates skipped (steps {streak[0]}-{s}) because of a '
            f'non-finite loss or gradient (nan_policy=skip, train.max_consecutive_skips={limit}); '
            f'the run is not learning. Last good checkpoint: {exp.checkpointer.last_good()}. Lower '
            'optim.lr or enable optim.clip_grad_norm, then rerun the same command.')
    skipped = int(jax.device_get(state.skipped))
    if skipped > skipped_seen:
      logging.warning('%d update(s) skipped because of a non-finite loss or gradient (%d in '
                      'total) by step %d.', skipped - skipped_seen, skipped, done)
      skipped_seen = skipped

  if start < c.train.steps and _is_main():  # the first step waits for XLA: say so, once
    logging.info('compiling the train step (step %d of %d; the first step includes the '
                    'compilation, later ones do not)', start + 1, c.train.steps)
  t_compile = time.perf_counter()
  try:
    for step in range(start, c.train.steps):
      batch = sharding.global_batch(exp.mesh, next(iterator))
      state, metrics = exp.step_fn(state, batch)
      done = step + 1
      unchecked.append((done, metrics['nonfinite']))
      if t_first is None:
        jax.block_until_ready(state.step)  # exclude compilation from images/s
        t_first = time.perf_counter()
        if _is_main():
          logging.info('first step done in %.1f s (compilation included)', t_first - t_compile)
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
      if _monitor_due(c.train, done):
        history.append({'step': done, **_log_monitors(exp, state, done, writer)})
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
  if c.train.get('monitor_every', 0):
    summary.update(_log_monitors(exp, state, c.train.steps, writer))
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
