"""--mode=eval and --mode=export end to end on a tiny SimCLR run: eval.json (kNN at k in
{10, 20, 200}, linear probe, fine-tuning), TensorBoard, the embedding PNG; the exported encoder
loads with one call and gives the method's features."""
import json
import os
import tempfile

import numpy as np
import pytest

from configs import simclr
from ssl_jax.data import sources
from ssl_jax.eval import features as features_lib
from ssl_jax.eval import knn
from ssl_jax.eval import run as eval_run
from ssl_jax.export import load_encoder
from ssl_jax.export import encoder as encoder_lib
from ssl_jax.export import run as export_run
from ssl_jax.train import loop, sharding
from tests import helpers


@pytest.fixture(scope='module')
def trained():
  c = helpers.tiny(simclr.get_config('builtin'), batch_size=32, steps=2)
  c.eval.linear_epochs = 5
  c.eval.finetune_steps = 30
  c.eval.finetune_batch_size = 64
  c.eval.finetune_lr = 0.1
  c.eval.batch_size = 512
  workdir = tempfile.mkdtemp()
  mesh = helpers.mesh(8)
  exp = loop.Experiment(c, workdir, mesh)
  state, _ = exp.restore_or_init()
  for i in range(c.train.steps):
    state, _ = exp.step_fn(state, sharding.global_batch(mesh, exp.train_ds[i]))
  exp.save(state, exp.train_iterator(), force=True)
  exp.checkpointer.close()
  return c, workdir, mesh, exp, state


def test_eval_writes_all_protocols(trained):
  c, workdir, mesh, exp, state = trained
  result = eval_run.evaluate(c, workdir, mesh, require_checkpoint=True)
  on_disk = json.load(open(os.path.join(workdir, 'eval.json')))
  assert on_disk['step'] == 2 and on_disk['checkpoint']
  for key in ('knn_top1_k10', 'knn_top1_k20', 'knn_top1_k200', 'linear_top1', 'linear_top5',
              'finetune_top1'):
    assert 0.0 <= on_disk[key] <= 1.0, key
  # kNN from the saved checkpoint's features, recomputed independently.
  kw = dict(mesh=mesh, image_size=16, batch_size=512)
  f_tr, y_tr = features_lib.extract_features(exp.feature_fn, state.params, state.buffers,
                                             sources.builtin_source('mnist5k', 'train'), **kw)
  f_te, y_te = features_lib.extract_features(exp.feature_fn, state.params, state.buffers,
                                             sources.builtin_source('mnist5k', 'test'), **kw)
  assert result['knn_top1_k200'] == knn.knn_top1(f_tr, y_tr, f_te, y_te, k=200, num_classes=10)
  assert result['knn_top1_k20'] > 0.2 and result['linear_top1'] > 0.2   # chance: 0.1
  # 30 AdamW steps of a width-4 ResNet: learning, well above chance (0.1 +- 0.01), not converged.
  assert result['finetune_top1'] > 0.15, result
  assert result['finetune_final_loss'] < result['finetune_first_loss']
  assert os.path.getsize(result['plot']) > 10_000
  assert any(f.startswith('events') for f in os.listdir(os.path.join(workdir, 'tensorboard')))


def test_export_then_load_encoder(trained):
  c, workdir, mesh, exp, state = trained
  result = export_run.export(c, workdir, mesh)
  assert 'timm_skipped' in result       # a width-4 ResNet has no timm twin
  model, variables = load_encoder(result['encoder'])
  images = np.stack([sources.builtin_source('mnist5k', 'test')[i]['image'][:16, :16]
                     for i in range(8)])
  want = np.asarray(exp.feature_fn(state.params, state.buffers,
                                   sharding.global_batch(mesh, images)))
  got = np.asarray(model.apply(variables, encoder_lib.preprocess(result['encoder'], images)))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert np.abs(want).max() > 0


def test_export_without_checkpoint_is_an_error(trained):
  c, _, mesh, _, _ = trained
  with pytest.raises(ValueError, match='no checkpoint'):
    export_run.export(c, tempfile.mkdtemp(), mesh)


def test_nonfinite_eval_metrics_are_errors(trained, monkeypatch, tmp_path):
  c, workdir, mesh, exp, state = trained
  with pytest.raises(eval_run.NonFiniteMetricError, match=r'linear_top1=nan'):
    eval_run.check_finite({'knn_top1': 0.5, 'linear_top1': float('nan'), 'step': 2}, 'run')
  assert eval_run.check_finite({'knn_top1': 0.5, 'checkpoint': True}, 'run')['knn_top1'] == 0.5
  # End to end: a probe that diverges stops the evaluation and nothing is written.
  c = c.copy_and_resolve_references()
  c.eval.finetune_steps, c.eval.plot, c.eval.knn_ks = 0, '', (10,)
  monkeypatch.setattr(eval_run.linear, 'linear_probe',
                      lambda *a, **k: {'top1': float('nan'), 'top5': float('inf')})
  before = open(os.path.join(workdir, 'eval.json')).read() if os.path.exists(
      os.path.join(workdir, 'eval.json')) else None
  with pytest.raises(eval_run.NonFiniteMetricError) as e:
    eval_run.evaluate(c, workdir, mesh, require_checkpoint=True)
  assert 'linear_top1=nan' in str(e.value) and 'linear_top5=inf' in str(e.value)
  after = open(os.path.join(workdir, 'eval.json')).read() if os.path.exists(
      os.path.join(workdir, 'eval.json')) else None
  assert before == after
  nan_features = lambda *a, **k: (np.full((4, 8), np.nan, np.float32), np.zeros(4, np.int32))
  monkeypatch.setattr(features_lib, 'extract_features', nan_features)
  with pytest.raises(eval_run.NonFiniteMetricError, match='non-finite features'):
    eval_run.evaluate(c, workdir, mesh, require_checkpoint=True)


def test_export_twice_replaces_the_first(trained):
  """A second --mode=export (and one after a killed export) atomically replaces the first."""
  c, workdir, mesh, exp, state = trained
  first = export_run.export(c, workdir, mesh)
  marker = os.path.join(workdir, 'export', 'from_the_first_export')
  open(marker, 'w').close()
  # A killed export leaves its temporary folder (with a half-written encoder) behind.
  stale = os.path.join(workdir, f'.export.tmp-step{first["step"]}', 'encoder', 'variables')
  os.makedirs(stale)
  second = export_run.export(c, workdir, mesh)
  assert second == first
  assert sorted(os.listdir(os.path.join(workdir, 'export'))) == ['encoder', 'export.json']
  assert not [n for n in os.listdir(workdir) if n.startswith('.export')]
  assert json.load(open(os.path.join(workdir, 'export', 'export.json'))) == second
  model, variables = load_encoder(second['encoder'])
  images = np.zeros((2, 16, 16, 3), np.uint8)
  want = np.asarray(exp.feature_fn(state.params, state.buffers,
                                   sharding.global_batch(mesh, np.concatenate([images] * 4))))[:2]
  got = np.asarray(model.apply(variables, encoder_lib.preprocess(second['encoder'], images)))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
