"""One writer per workdir (the trainer's lock), read-only readers, and the run's saved config:
resume refuses trajectory changes, eval/export read the saved config and need no training data.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import dino, simclr
from ssl_jax import main, methods
from ssl_jax.data import folder, pipeline, sources
from ssl_jax.eval import run as eval_run
from ssl_jax.export import run as export_run
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import loop
from ssl_jax.train import workdir as workdir_lib
from tests import helpers


# -- the lock ---------------------------------------------------------------------------------------
def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait()
  return proc.pid


def _write_lock(workdir, **holder):
  os.makedirs(workdir, exist_ok=True)
  record = {'host': socket.gethostname(), 'pid': os.getpid(), 'proc_start': None,
            'started': 0.0}
  record.update(holder)
  with open(os.path.join(workdir, workdir_lib.LOCK_NAME), 'w') as f:
    json.dump(record, f)


def test_second_trainer_is_refused_and_release_frees(tmp_path):
  first = workdir_lib.WorkdirLock(tmp_path).acquire()
  on_disk = json.load(open(tmp_path / 'trainer.lock'))
  assert on_disk['pid'] == os.getpid() and on_disk['host'] == socket.gethostname()
  with pytest.raises(workdir_lib.WorkdirLockedError, match='in use by another trainer') as e:
    workdir_lib.WorkdirLock(tmp_path).acquire()
  assert '\n' not in str(e.value) and f'pid {os.getpid()}' in str(e.value)
  first.release()
  assert not (tmp_path / 'trainer.lock').exists()
  workdir_lib.WorkdirLock(tmp_path).acquire().release()


def test_stale_lock_of_a_dead_trainer_is_taken_over(tmp_path, caplog):
  _write_lock(tmp_path, pid=_dead_pid())
  lock = workdir_lib.WorkdirLock(tmp_path).acquire()
  assert json.load(open(tmp_path / 'trainer.lock'))['pid'] == os.getpid()
  assert 'dead trainer' in caplog.text
  lock.release()
  # A live pid whose start time differs is a reused pid: the holder is gone.
  _write_lock(tmp_path, proc_start='1')
  workdir_lib.WorkdirLock(tmp_path).acquire().release()


def test_lock_of_another_host_or_a_live_process_is_kept(tmp_path):
  _write_lock(tmp_path, host='some-other-host', pid=_dead_pid())
  with pytest.raises(workdir_lib.WorkdirLockedError, match='some-other-host'):
    workdir_lib.WorkdirLock(tmp_path).acquire()
  sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    _write_lock(tmp_path, pid=sleeper.pid, proc_start=workdir_lib._proc_start(sleeper.pid))  # pylint: disable=protected-access
    with pytest.raises(workdir_lib.WorkdirLockedError, match=f'pid {sleeper.pid}'):
      workdir_lib.WorkdirLock(tmp_path).acquire()
    # Only process 0 of a job writes (and so checks) the lock.
    assert not workdir_lib.WorkdirLock(tmp_path, is_writer=False).acquire().held
  finally:
    sleeper.kill()
    sleeper.wait()
  # A lock taken over by someone else is not deleted by the former holder's release.
  lock = workdir_lib.WorkdirLock(tmp_path / 'b').acquire()
  _write_lock(tmp_path / 'b', pid=12345678)
  lock.release()
  assert (tmp_path / 'b' / 'trainer.lock').exists()


# -- the config rules ----------------------------------------------------------------------------
def test_field_rules():
  run = ('data.batch_size', 'train.steps', 'optim.lr', 'optim.warmup_steps', 'method.temperature',
         'model.width', 'data.source', 'data.name', 'data.path', 'seed', 'aug.recipe',
         'eval.online_linear', 'some.new_field')
  harmless = ('train.log_every', 'train.checkpoint_every', 'train.keep_checkpoints',
              'train.progress_bar', 'eval.knn_k', 'eval.linear_epochs', 'export.dir',
              'data.num_workers', 'data.prefetch', 'mesh.shape', 'train.allow_config_change')
  assert [workdir_lib.field_kind(f) for f in run] == ['run'] * len(run)
  assert [workdir_lib.field_kind(f) for f in harmless] == ['harmless'] * len(harmless)


def test_resume_check_refuses_trajectory_changes(tmp_path):
  saved = workdir_lib._plain(helpers.tiny(simclr.get_config('builtin')))  # pylint: disable=protected-access
  c = helpers.tiny(simclr.get_config('builtin'))
  assert workdir_lib.check_resume(saved, c, tmp_path) == []
  c.train.log_every, c.eval.knn_k = 7, 3
  assert len(workdir_lib.check_resume(saved, c, tmp_path)) == 2   # printed, accepted
  c.optim.clip_grad_norm = 1.0
  with pytest.raises(workdir_lib.ConfigChangeError,
                     match=r'optim.clip_grad_norm: 0.0 -> 1.0 \(run\).*allow_config_change'):
    workdir_lib.check_resume(saved, c, tmp_path)
  c.train.allow_config_change = True
  assert len(workdir_lib.check_resume(saved, c, tmp_path)) == 4


def test_reader_config_is_the_saved_run_plus_eval_side_overrides(tmp_path):
  trained = helpers.tiny(simclr.get_config('builtin'))
  trained.optim.lr, trained.data.eval_split, trained.eval.knn_k = 0.2, 'val', 5
  workdir_lib.save_config(tmp_path, helpers.tiny(simclr.get_config('builtin')))
  workdir_lib.save_config(tmp_path, trained)   # a later session replaces it atomically
  assert [p.name for p in tmp_path.iterdir()] == ['config.json']
  cli = helpers.tiny(simclr.get_config('builtin'))
  cli.eval.knn_k, cli.optim.lr = 7, 1.0
  r = workdir_lib.reader_config(cli, tmp_path, overrides=('eval.knn_k', 'optim.lr'))
  assert (r.optim.lr, r.data.eval_split, r.eval.knn_k) == (0.2, 'val', 7)
  r = workdir_lib.reader_config(cli, tmp_path)   # Python callers: every eval-side field of cli
  assert (r.optim.lr, r.data.eval_split, r.eval.knn_k) == (0.2, 'test', 7)
  assert r.data.crop_scale == trained.data.crop_scale and isinstance(r.mesh.shape, tuple)
  assert workdir_lib.config_diff(trained, workdir_lib.reader_config(trained, tmp_path)) == []


def test_batch_spec_matches_both_inputs():
  """The sample batch every mode shapes the state from equals what the pipeline delivers (DINO:
  global and local crops; label and index)."""
  c = helpers.tiny(dino.get_config('builtin'), batch_size=4)
  method = methods.build_method(c)
  src = sources.get_source(c.data, c.data.train_split)
  spec = pipeline.batch_spec(method.crop_specs(), 4)
  real = pipeline.train_dataset(src, method.crop_specs(), global_batch=4, seed=0)[0]
  it = pipeline.IterableInput([{'image': np.zeros((4, 20, 20, 3), np.uint8)}],
                              method.crop_specs(), local_batch=4)
  for batch in (real, next(it)):
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        k: (s, np.dtype(d)) for k, (s, d) in spec.items()}
  assert len(spec) > 4  # several crops + label + index
  loop.check_batch_spec(real, method, 4)
  with pytest.raises(ValueError, match="'index'"):
    loop.check_batch_spec(dict(real, index=real['index'].astype(np.int32)), method, 4)


# -- read-only readers -----------------------------------------------------------------------------
def test_reader_leaves_a_trainers_in_progress_save(tmp_path):
  state = {'w': np.arange(4, dtype=np.float32)}
  meta = {'method': 'm', 'backbone': 'b', 'param_shapes': {}}
  writer = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  writer.save(1, state, {}, meta)
  writer.close()
  tmp = tmp_path / 'checkpoints' / '2.orbax-checkpoint-tmp-1234'   # a save in progress
  tmp.mkdir()
  reader = ckpt_lib.Checkpointer(str(tmp_path), read_only=True)
  step, restored, _ = reader.restore_latest(jax.tree_util.tree_map(np.zeros_like, state), meta)
  assert step == 1 and np.array_equal(restored['w'], state['w'])
  with pytest.raises(ValueError, match='read-only'):
    reader.save(3, state, {}, meta)
  reader.close()
  assert tmp.exists()
  ckpt_lib.Checkpointer(str(tmp_path)).close()   # a trainer does clean it up, by close()
  assert not tmp.exists()


def test_readers_need_a_checkpoint(tmp_path):
  c = helpers.tiny(simclr.get_config('builtin'))
  with pytest.raises(workdir_lib.NoCheckpointError, match='has no checkpoint'):
    eval_run.evaluate(c, str(tmp_path), helpers.mesh(1))
  with pytest.raises(workdir_lib.NoCheckpointError, match='has no checkpoint'):
    export_run.export(c, str(tmp_path), helpers.mesh(1))
  assert not (tmp_path / 'checkpoints').exists()


# -- end to end: a folder run, resumed, then read without its training data -------------------------
@pytest.fixture(scope='module')
def folder_run(tmp_path_factory):
  """2 steps on an image folder with train/, val/ and test/; returns (config, workdir, root)."""
  root = tmp_path_factory.mktemp('images')
  rng = np.random.default_rng(0)
  for split, n in (('train', 12), ('val', 8), ('test', 6)):
    for k, cls in enumerate(('a', 'b')):
      os.makedirs(root / split / cls)
      for i in range(n):
        img = np.clip(60 + 120 * k + rng.integers(-40, 40, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / split / cls / f'{i}.png')
  c = helpers.tiny(simclr.get_config('builtin'), batch_size=8, steps=2)
  c.data.update(source='folder', path=str(root), eval_train_split='val', eval_split='test')
  c.optim.lr = 0.2
  c.eval.linear_epochs, c.eval.plot = 2, ''
  workdir = str(tmp_path_factory.mktemp('run'))
  summary = loop.train_and_evaluate(c, workdir, helpers.mesh(1))
  assert summary['steps_run'] == 2
  return c, workdir, root


def test_config_saved_with_the_first_checkpoint(folder_run):
  c, workdir, _ = folder_run
  saved = json.load(open(os.path.join(workdir, 'config.json')))
  assert saved['optim']['lr'] == 0.2 and saved['data']['source'] == 'folder'
  assert not os.path.exists(os.path.join(workdir, 'trainer.lock'))   # released at the end
  assert not [n for n in os.listdir(workdir) if '.tmp' in n]


def test_resume_with_changed_config(folder_run):
  c, workdir, _ = folder_run
  c = c.copy_and_resolve_references()
  c.train.log_every = 2                      # harmless: accepted (nothing left to train)
  assert loop.train_and_evaluate(c, workdir, helpers.mesh(1))['resumed_from_step'] == 2
  c.optim.lr = 0.5
  with pytest.raises(workdir_lib.ConfigChangeError, match=r'optim.lr: 0.2 -> 0.5'):
    loop.train_and_evaluate(c, workdir, helpers.mesh(1))
  assert not os.path.exists(os.path.join(workdir, 'trainer.lock'))


def test_resume_on_a_changed_file_list_is_refused(folder_run):
  c, workdir, root = folder_run
  assert json.load(open(os.path.join(workdir, 'data_fingerprint.json')))['num_records'] == 24
  extra = root / 'train' / 'a' / 'extra.png'
  shutil.copy(root / 'train' / 'a' / '0.png', extra)
  folder.list_folder.cache_clear()   # a new process lists the folder again
  try:
    with pytest.raises(workdir_lib.ConfigChangeError, match='training data .* changed'):
      loop.train_and_evaluate(c, workdir, helpers.mesh(1))
  finally:
    extra.unlink()
    folder.list_folder.cache_clear()
  assert loop.train_and_evaluate(c, workdir, helpers.mesh(1))['resumed_from_step'] == 2


def test_a_second_trainer_is_refused_before_any_work(folder_run, tmp_path):
  c, workdir, _ = folder_run
  with workdir_lib.WorkdirLock(workdir):
    with pytest.raises(workdir_lib.WorkdirLockedError, match='in use by another trainer'):
      loop.train_and_evaluate(c, workdir, helpers.mesh(1))


def test_eval_and_export_use_the_saved_config_without_training_data(folder_run, tmp_path):
  """The command line names only the built-in config (no folder, other lr); eval and export
  take the trained model from WORKDIR/config.json and read no training data: the folder's
  train/ split is gone."""
  _, workdir, root = folder_run
  moved = tmp_path / 'train_moved'
  shutil.move(str(root / 'train'), moved)
  try:
    cli = helpers.tiny(simclr.get_config('builtin'), batch_size=8, steps=2)
    cli.eval.linear, cli.eval.plot, cli.eval.knn_ks = False, '', (3,)
    overrides = main.config_overrides(['main.py', '--mode=eval', '--config.eval.linear=False',
                                       '--config.eval.plot=', '--config.eval.knn_ks=(3,)',
                                       '--config.optim.lr=1.0'])
    assert overrides == ('eval.linear', 'eval.plot', 'eval.knn_ks', 'optim.lr')
    result = eval_run.evaluate(cli, workdir, helpers.mesh(1), overrides=overrides)
    assert result['step'] == 2 and result['checkpoint']
    assert result['num_train'] == 16 and result['num_test'] == 12   # val/ and test/ of the folder
    assert set(k for k in result if k.startswith('knn_top1_k')) == {'knn_top1_k3',
                                                                   'knn_top1_k20'}
    assert 'linear_top1' not in result           # the command line's eval settings apply
    out = export_run.export(cli, workdir, helpers.mesh(1), overrides=())
    assert out['step'] == 2 and os.path.isdir(out['encoder'])
  finally:
    shutil.move(str(moved), root / 'train')


def test_readers_do_not_import_the_loop():
  """Eval, export, viz, the memory check and the non-training benchmarks build on the restorable
  run (train/experiment.py), never on the trainer (train/loop.py)."""
  import ast  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  top = pathlib.Path(__file__).resolve().parents[2]
  files = [*(top / 'ssl_jax').glob('eval/*.py'), *(top / 'ssl_jax').glob('export/*.py'),
           *(top / 'ssl_jax').glob('viz/*.py'), top / 'ssl_jax/train/memory.py',
           top / 'ssl_jax/train/experiment.py',
           # quality.py, anomaly.py and own_data.py pretrain through loop.train_and_evaluate.
           *[p for p in (top / 'benchmarks').glob('*.py')
             if p.name not in ('quality.py', 'anomaly.py', 'own_data.py')]]
  offenders = []
  for path in files:
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom))
               else [])
      module = getattr(node, 'module', None) or ''
      if 'ssl_jax.train.loop' in [module, *names] or (module == 'ssl_jax.train'
                                                      and 'loop' in names):
        offenders.append(str(path.relative_to(top)))
  assert len(files) > 15 and not offenders, offenders


def test_command_line_eval_of_an_empty_workdir_is_one_line(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=root, XLA_FLAGS=helpers.xla_flags(1))
  out = subprocess.run([sys.executable, '-m', 'ssl_jax.main', '--config=configs/simclr.py:builtin',
                        f'--workdir={tmp_path / "typo"}', '--mode=eval'], cwd=root, env=env,
                       capture_output=True, text=True, timeout=300)
  text = out.stdout + out.stderr
  assert out.returncode == 1 and 'Traceback' not in text, text
  assert 'ssl_jax: error: NoCheckpointError: --workdir=' in text and 'has no checkpoint' in text
