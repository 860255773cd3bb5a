"""Checkpoint safety and numerical guards, on one tiny SimCLR experiment compiled once.

* a temporary (half-written) checkpoint directory is never the latest and is cleaned up;
* a truncated / zero-byte / bit-flipped / unreadable latest checkpoint is reported, moved aside
  and the previous one is used; if none is readable the error says so;
* a checkpoint of another method / backbone / shape, or of another optimizer layout
  (optim.clip_grad_norm added), is refused with what differs and nothing is quarantined;
  train.warm_start loads its params/buffers into the new optimizer state;
* transient read errors are retried, then stop without quarantine; a workdir whose checkpoints
  were all quarantined is not silently restarted from step 0;
* disk full during an (async) save is reported and earlier checkpoints stay intact;
* NaN: skipped and counted ('skip'; stop after train.max_consecutive_skips in a row), or stop
  naming the step and the last good checkpoint ('stop'); a non-finite state is never written.

The method's loss is wrapped to be NaN at steps 5 and 6 (state.step 4 and 5) so that one compiled
step serves every test: runs of <= 4 steps are clean.
"""
import errno
import glob
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import simclr
from ssl_jax import methods
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import loop
from tests import helpers

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
NAN_STEPS = (4, 5)  # state.step values whose loss is NaN (reported as steps 5 and 6)


def tiny_config(steps=4, **train):
  c = helpers.tiny(simclr.get_config('builtin'), steps=steps)
  c.data.name = 'digits'
  c.method.proj_hidden_dim = 16
  c.method.proj_dim = 8
  c.train.checkpoint_every = 2
  c.train.keep_checkpoints = 5
  for k, v in train.items():
    c.train[k] = v
  return c


@pytest.fixture(scope='module')
def exp(tmp_path_factory):
  """One Experiment (one compiled step) whose loss is NaN at NAN_STEPS."""
  real_build = methods.build_method

  def build_nan_method(config):
    method = real_build(config)
    loss = method.loss

    def nan_at_steps(params, state, views, rng):
      value, aux = loss(params, state, views, rng)
      bad = jnp.isin(state.step, jnp.asarray(NAN_STEPS))
      return jnp.where(bad, jnp.nan, value), aux
    method.loss = nan_at_steps
    return method

  methods.build_method = build_nan_method
  try:
    e = loop.Experiment(tiny_config(), str(tmp_path_factory.mktemp('exp')), helpers.mesh(1))
  finally:
    methods.build_method = real_build
  return e


def train(exp, workdir, monkeypatch, **kw):
  """``loop.train_and_evaluate`` in ``workdir``, reusing the module's compiled experiment."""
  exp.workdir = str(workdir)
  monkeypatch.setattr(loop, 'Experiment', lambda *a, **k: exp)
  return loop.train_and_evaluate(tiny_config(**kw), str(workdir))


@pytest.fixture(scope='module')
def reference(exp, tmp_path_factory):
  """A clean 4-step run with checkpoints at steps 2 and 4: (workdir, final state)."""
  mp = pytest.MonkeyPatch()
  workdir = tmp_path_factory.mktemp('reference')
  try:
    summary = train(exp, workdir, mp, steps=4)
  finally:
    mp.undo()
  assert summary['skipped_updates'] == 0
  state = restore(exp, workdir)
  return workdir, state


def restore(exp, workdir):
  exp.workdir = str(workdir)
  state, _ = exp.restore_or_init()
  exp.checkpointer.close()
  return state


def copy_run(reference, tmp_path):
  dst = tmp_path / 'run'
  shutil.copytree(reference[0], dst)
  return dst


def step_files(workdir, step, pattern):
  return sorted(f for f in glob.glob(str(workdir / 'checkpoints' / str(step) / pattern),
                                     recursive=True) if os.path.isfile(f))


def test_half_written_checkpoint_is_never_latest(exp, reference, tmp_path):
  run = copy_run(reference, tmp_path)
  # What a kill during an async save of step 6 leaves behind: Orbax's temporary directory.
  tmp = run / 'checkpoints' / '6.orbax-checkpoint-tmp-1700000000'
  shutil.copytree(run / 'checkpoints' / '4', tmp)
  os.remove(tmp / 'commit_success.txt')
  assert ckpt_lib.Checkpointer(str(run)).latest_step() == 4
  state = restore(exp, run)
  assert int(state.step) == 4
  assert not tmp.exists(), 'leftover temporary directories are cleaned up on open'
  helpers.assert_trees_close(state.params, reference[1].params, rtol=0, atol=0)


@pytest.mark.parametrize('damage', ['truncate', 'zero_bytes', 'bit_flip', 'bad_json',
                                    'missing_item', 'fingerprint'])
def test_corrupt_latest_falls_back_to_previous(exp, reference, tmp_path, damage, caplog):
  run = copy_run(reference, tmp_path)
  data = step_files(run, 4, 'state/**/d/*')
  assert data
  if damage == 'truncate':
    for f in data:
      os.truncate(f, os.path.getsize(f) // 2)
  elif damage == 'zero_bytes':
    for f in data:
      open(f, 'wb').close()
  elif damage == 'bit_flip':  # a flipped byte in the largest data file, whatever it holds
    f = max(data, key=os.path.getsize)
    b = bytearray(open(f, 'rb').read())
    b[len(b) // 2] ^= 0x40
    open(f, 'wb').write(bytes(b))
  elif damage == 'bad_json':
    open(run / 'checkpoints' / '4' / 'data' / 'metadata', 'w').write('{"next_ind')
  elif damage == 'missing_item':
    shutil.rmtree(run / 'checkpoints' / '4' / 'state')
  elif damage == 'fingerprint':  # silent corruption: readable, but not the bits that were saved
    path = run / 'checkpoints' / '4' / 'meta' / 'metadata'
    meta = json.load(open(path))
    key = sorted(meta['fingerprint'])[0]
    meta['fingerprint'][key] = (meta['fingerprint'][key] + 1) % 2**32
    json.dump(meta, open(path, 'w'))
  with caplog.at_level('ERROR'):
    state = restore(exp, run)
  assert int(state.step) == 2, damage
  assert any('unreadable' in r.getMessage() and '/4' in r.getMessage() for r in caplog.records)
  assert ckpt_lib.Checkpointer(str(run)).committed_steps() == [2]
  moved = os.listdir(run / 'checkpoints_corrupt')
  assert len(moved) == 1 and moved[0].startswith('4-')


def test_no_readable_checkpoint_is_an_error(exp, reference, tmp_path):
  run = copy_run(reference, tmp_path)
  for step in (2, 4):
    for f in step_files(run, step, 'state/**/d/*'):
      open(f, 'wb').close()
  exp.workdir = str(run)
  with pytest.raises(ckpt_lib.CorruptCheckpointError, match='no readable checkpoint') as e:
    exp.restore_or_init()
  exp.checkpointer.close()
  assert 'step 4' in str(e.value) and 'step 2' in str(e.value)


@pytest.mark.parametrize('field,value,message', [
    ('method', 'byol', "method: checkpoint has 'simclr', config has 'byol'"),
    ('backbone', 'vit_tiny', "backbone: checkpoint has 'resnet18', config has 'vit_tiny'"),
])
def test_checkpoint_of_other_method_or_backbone_is_refused(exp, reference, field, value, message):
  ckptr = ckpt_lib.Checkpointer(str(reference[0]))
  with pytest.raises(ckpt_lib.CheckpointMismatchError) as e:
    ckptr.restore(4, None, dict(exp.meta, **{field: value}))
  ckptr.close()
  assert message in str(e.value) and 'different model' in str(e.value)


def test_checkpoint_of_other_shape_is_refused(reference, tmp_path):
  c = tiny_config()
  c.model.width = 8  # only eval_shape runs: nothing is compiled
  other = loop.Experiment(c, str(reference[0]), helpers.mesh(1))
  # The saved config names the field first (train/workdir.py) ...
  with pytest.raises(ValueError, match=r'model.width: 4 -> 8 \(run\)'):
    other.restore_or_init()
  other.checkpointer.close()
  # ... and a change allowed on purpose still cannot restore another model's parameters.
  other.resolved_config.train.allow_config_change = True
  with pytest.raises(ValueError, match='different model') as e:
    other.restore_or_init()
  other.checkpointer.close()
  assert 'shape differences' in str(e.value) and '[3, 3, 3, 4] vs [3, 3, 3, 8]' in str(e.value)
  assert ckpt_lib.Checkpointer(str(reference[0])).committed_steps() == [2, 4], 'left untouched'


def test_disk_full_during_save_is_reported_and_older_checkpoints_stay(exp, reference, tmp_path,
                                                                    monkeypatch):
  run = copy_run(reference, tmp_path)
  from orbax.checkpoint._src.handlers import json_checkpoint_handler as jch

  async def disk_full(self, x, directory):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / 'metadata'))
  monkeypatch.setattr(jch.JsonCheckpointHandler, '_save_fn', disk_full)
  with pytest.raises(ckpt_lib.CheckpointSaveError) as e:
    train(exp, run, monkeypatch, steps=6)
  msg = str(e.value)
  assert 'step 6' in msg and 'disk is full' in msg and 'steps [2, 4]' in msg, msg
  monkeypatch.undo()
  assert ckpt_lib.Checkpointer(str(run)).committed_steps() == [2, 4]
  state = restore(exp, run)  # the fingerprint check passes: step 4 is intact
  assert int(state.step) == 4
  helpers.assert_trees_close(state.params, reference[1].params, rtol=0, atol=0)


def test_nonfinite_steps_are_skipped_and_counted(exp, reference, tmp_path, monkeypatch, caplog):
  run = copy_run(reference, tmp_path)
  with caplog.at_level('WARNING'):
    summary = train(exp, run, monkeypatch, steps=8, nan_policy='skip', log_every=4,
                    max_consecutive_skips=3)
  assert summary['skipped_updates'] == len(NAN_STEPS)
  assert np.isfinite(summary['final_loss'])
  assert any('2 update(s) skipped' in r.getMessage() for r in caplog.records)
  history = json.load(open(run / 'history.json'))
  # history.json spans sessions: the copied run's steps 1-4, then this session's log at step 8.
  assert [h['step'] for h in history] == [1, 2, 3, 4, 8]
  # A skipped step leaves params, optimizer state and buffers exactly as they were.
  exp.workdir = str(run)
  s8 = restore(exp, run)
  assert int(s8.step) == 8 and int(s8.skipped) == 2
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(s8.params))


def test_stop_policy_names_step_and_last_good_checkpoint(exp, reference, tmp_path, monkeypatch):
  run = copy_run(reference, tmp_path)
  # log_every=3: the NaN at step 5 is found at the step-6 checkpoint boundary, not at a log step.
  with pytest.raises(loop.NonFiniteError) as e:
    train(exp, run, monkeypatch, steps=8, nan_policy='stop', log_every=3)
  msg = str(e.value)
  assert 'at step 5' in msg and f'last good checkpoint: step 4 in {run}' in msg, msg
  assert ckpt_lib.Checkpointer(str(run)).committed_steps() == [2, 4]


def test_nonfinite_state_is_never_saved(exp, reference, tmp_path):
  run = copy_run(reference, tmp_path)
  state = restore(exp, run)
  leaf_path = 'params'
  bad = state.replace(params=jax.tree_util.tree_map(lambda x: x.at[(0,) * x.ndim].set(jnp.inf),
                                                    state.params))
  ckptr = ckpt_lib.Checkpointer(str(run))
  with pytest.raises(ckpt_lib.NonFiniteStateError) as e:
    ckptr.save(6, bad, {}, exp.meta)
  ckptr.close()
  assert 'step 6' in str(e.value) and leaf_path in str(e.value)
  assert f'last good checkpoint: step 4 in {run}' in str(e.value)
  assert ckpt_lib.Checkpointer(str(run)).committed_steps() == [2, 4]
  assert not any('tmp' in n for n in os.listdir(run / 'checkpoints'))


# -- restore errors classified (issue 30 item 2) ---------------------------------------------------
def other_optimizer_experiment(workdir, **train):
  """The module's config with optim.clip_grad_norm=1.0 (what the NaN-stop message recommends):
  same model, another optimizer-state tree. Only eval_shape runs: nothing is compiled. The change
  is allowed past the saved-config check (train/workdir.py; tested there) so that the checkpoint's
  own check is what is tested here."""
  c = tiny_config(**train)
  c.optim.clip_grad_norm = 1.0
  c.train.allow_config_change = True
  return loop.Experiment(c, str(workdir), helpers.mesh(1))


def test_changed_optimizer_is_refused_and_nothing_is_quarantined(reference, tmp_path):
  run = copy_run(reference, tmp_path)
  other = other_optimizer_experiment(run)
  with pytest.raises(ckpt_lib.CheckpointMismatchError) as e:
    other.restore_or_init()
  other.checkpointer.close()
  msg = str(e.value)
  assert 'opt_state' in msg and 'only in the checkpoint' in msg, msg
  assert 'only in this config' in msg, msg
  assert '--workdir' in msg and 'train.warm_start=True' in msg, msg
  assert ckpt_lib.Checkpointer(str(run)).committed_steps() == [2, 4], 'nothing moved'
  assert not (run / 'checkpoints_corrupt').exists()
  # The original config still resumes from the newest step.
  assert int(restore(loop.Experiment(tiny_config(), str(run), helpers.mesh(1)), run).step) == 4


def test_warm_start_loads_params_into_the_new_optimizer_state(exp, reference, tmp_path):
  run = copy_run(reference, tmp_path)
  other = other_optimizer_experiment(run, warm_start=True)
  state, data_state = other.restore_or_init()
  other.checkpointer.close()
  assert int(state.step) == 4 and data_state is not None
  assert ckpt_lib.tree_signature(state) == ckpt_lib.tree_signature(other.abstract_state)
  helpers.assert_trees_close(state.params, reference[1].params, rtol=0, atol=0)
  helpers.assert_trees_close(state.buffers, reference[1].buffers, rtol=0, atol=0)
  fresh = other.initial_state()
  helpers.assert_trees_close(state.opt_state, fresh.opt_state, rtol=0, atol=0)
  assert not (run / 'checkpoints_corrupt').exists()


@pytest.mark.parametrize('error', [OSError(errno.EIO, 'Input/output error'),
                                   ValueError('UNAVAILABLE: HTTP response code: 503')])
def test_transient_read_errors_are_retried_then_stop_without_quarantine(exp, reference, tmp_path,
                                                                       monkeypatch, error):
  run = copy_run(reference, tmp_path)
  real, calls = ckpt_lib.Checkpointer._read_meta, []

  def flaky(self, step, fail=2):
    calls.append(step)
    if len(calls) <= fail:
      raise error
    return real(self, step)
  monkeypatch.setattr(ckpt_lib.Checkpointer, 'backoff_s', 0.0)
  monkeypatch.setattr(ckpt_lib.Checkpointer, '_read_meta', flaky)
  assert int(restore(exp, run).step) == 4 and calls == [4, 4, 4]   # two failures, then read
  calls.clear()
  monkeypatch.setattr(ckpt_lib.Checkpointer, '_read_meta', lambda s, step: flaky(s, step, 99))
  exp.workdir = str(run)
  with pytest.raises(ckpt_lib.CheckpointIOError, match='tried 4 times') as e:
    exp.restore_or_init()
  exp.checkpointer.close()
  assert calls == [4] * 4 and 'nothing was moved' in str(e.value)
  assert ckpt_lib.Checkpointer(str(run)).committed_steps() == [2, 4]
  assert not (run / 'checkpoints_corrupt').exists()


def test_quarantined_run_is_not_silently_restarted(exp, reference, tmp_path):
  run = copy_run(reference, tmp_path)
  for step in (2, 4):
    for f in step_files(run, step, 'state/**/d/*'):
      open(f, 'wb').close()
  exp.workdir = str(run)
  with pytest.raises(ckpt_lib.CorruptCheckpointError, match='no readable checkpoint'):
    exp.restore_or_init()
  exp.checkpointer.close()
  with pytest.raises(ckpt_lib.CorruptCheckpointError) as e:   # the next run: nothing left to list
    exp.restore_or_init()
  exp.checkpointer.close()
  assert 'train.ignore_quarantined=True' in str(e.value) and '4-' in str(e.value)
  exp.config.train.ignore_quarantined = True
  try:
    assert int(restore(exp, run).step) == 0
  finally:
    exp.config.train.ignore_quarantined = False


def test_skip_policy_stops_after_consecutive_skips(exp, reference, tmp_path, monkeypatch):
  run = copy_run(reference, tmp_path)
  # Steps 5 and 6 are skipped; the check at the step-6 checkpoint sees two in a row.
  with pytest.raises(loop.NonFiniteError) as e:
    train(exp, run, monkeypatch, steps=8, nan_policy='skip', log_every=4, max_consecutive_skips=2)
  msg = str(e.value)
  assert '2 consecutive updates skipped (steps 5-6)' in msg, msg
  assert f'Last good checkpoint: step 4 in {run}' in msg, msg
  assert ckpt_lib.Checkpointer(str(run)).committed_steps() == [2, 4]
