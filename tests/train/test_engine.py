"""The engine end to end on SimCLR: 1 vs 8 device parity, resume, config errors, summary."""
import json
import os

import jax
import numpy as np
import pytest

from configs import simclr
from ssl_jax.data import pipeline
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import loop
from tests import helpers


def tiny_simclr(steps=4):
  c = helpers.tiny(simclr.get_config('builtin'), steps=steps)
  c.method.proj_hidden_dim = 16
  c.method.proj_dim = 8
  return c


def test_one_vs_eight_devices_same_steps():
  assert jax.device_count() >= 8, 'conftest sets 8 simulated devices'
  c = tiny_simclr()
  s1, h1 = helpers.run_steps(c, 1, 3)
  s8, h8 = helpers.run_steps(c, 8, 3)
  np.testing.assert_allclose([h['loss'] for h in h1], [h['loss'] for h in h8], rtol=1e-5)
  # Reductions run in another order on 8 devices: float32 noise (~1e-7 in the loss) grows
  # through 3 LARS steps to ~1e-5 absolute in small BatchNorm biases. A per-device (non-global)
  # BatchNorm or negative set would already change the first loss by far more than 1e-5.
  helpers.assert_trees_close(s1.params, s8.params, rtol=1e-3, atol=1e-4)
  helpers.assert_trees_close(s1.buffers, s8.buffers, rtol=1e-3, atol=1e-4)
  # (The loss parity above also pins the global negative set: per-device negatives would give
  # 8 different, smaller losses on 8 devices.)


def _final_params(workdir, config):
  exp = loop.Experiment(config, workdir, helpers.mesh(1))
  state, _ = exp.restore_or_init()
  exp.checkpointer.close()
  return state


def test_kill_and_resume_continues_same_trajectory(tmp_path, monkeypatch):
  c = tiny_simclr(steps=4)
  c.train.checkpoint_every = 2
  full = loop.train_and_evaluate(c, str(tmp_path / 'full'), helpers.mesh(1))
  assert full['steps_run'] == 4

  # A run that dies while fetching the 4th batch (after the step-2 checkpoint).
  real = pipeline.make_iterator

  def dying_iterator(*a, **kw):
    it = real(*a, **kw)

    class Dying:
      n = 0

      def __next__(self):
        self.n += 1
        if self.n == 4:
          raise KeyboardInterrupt('simulated kill')
        return next(it)

      def get_state(self):
        return it.get_state()

      def set_state(self, s):
        it.set_state(s)
    return Dying()

  monkeypatch.setattr(pipeline, 'make_iterator', dying_iterator)
  with pytest.raises(KeyboardInterrupt):
    loop.train_and_evaluate(c, str(tmp_path / 'killed'), helpers.mesh(1))
  monkeypatch.setattr(pipeline, 'make_iterator', real)
  assert ckpt_lib.Checkpointer(str(tmp_path / 'killed')).latest_step() == 2

  resumed = loop.train_and_evaluate(c, str(tmp_path / 'killed'), helpers.mesh(1))
  assert resumed['resumed_from_step'] == 2 and resumed['steps_run'] == 2
  assert resumed['final_loss'] == pytest.approx(full['final_loss'], rel=1e-6)
  a = _final_params(str(tmp_path / 'full'), c)
  b = _final_params(str(tmp_path / 'killed'), c)
  assert int(a.step) == int(b.step) == 4
  helpers.assert_trees_close(a.params, b.params, rtol=0, atol=0)
  helpers.assert_trees_close(a.opt_state, b.opt_state, rtol=0, atol=0)
  helpers.assert_trees_close(a.buffers, b.buffers, rtol=0, atol=0)


def test_summary_and_tensorboard(tmp_path):
  c = tiny_simclr(steps=2)
  c.train.final_eval = True
  summary = loop.train_and_evaluate(c, str(tmp_path), helpers.mesh(1))
  on_disk = json.load(open(tmp_path / 'summary.json'))
  for key in ('method', 'backbone', 'steps', 'final_loss', 'images_per_sec', 'knn_top1',
              'knn_top1_random_init'):
    assert key in on_disk, key
  assert on_disk == json.loads(json.dumps(summary))
  assert 0.1 <= summary['knn_top1'] <= 1.0  # ten classes: a random encoder already beats chance
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path / 'tensorboard'))


@pytest.mark.parametrize('field,value,message', [
    ('method.name', 'simclrr', "config.method.name='simclrr' is not a known method (did you mean 'simclr'?)"),
    ('model.backbone', 'resnet19', 'config.model.backbone'),
    ('data.batch_size', 12, 'config.data.batch_size: 12 is not divisible by the number of devices (8)'),
    ('data.batch_size', 0, 'config.data.batch_size: must be positive'),
    ('optim.name', 'lamb', 'config.optim.name'),
    ('data.crop_scale', (0.5, 0.2), 'config.data.crop_scale'),
])
def test_config_errors_name_the_field(tmp_path, field, value, message):
  c = tiny_simclr()
  section, key = field.split('.')
  c[section][key] = value
  with pytest.raises(ValueError) as e:
    loop.Experiment(c, str(tmp_path), helpers.mesh(8))
  assert message in str(e.value)


def test_checkpoint_from_other_model_is_refused(tmp_path):
  c = tiny_simclr(steps=1)
  loop.train_and_evaluate(c, str(tmp_path), helpers.mesh(1))
  c.method.proj_dim = 12
  # The saved config names the field first (train/workdir.py) ...
  with pytest.raises(ValueError, match=r'method.proj_dim: 8 -> 12 \(run\)'):
    loop.train_and_evaluate(c, str(tmp_path), helpers.mesh(1))
  # ... and a change allowed on purpose still cannot restore another model's parameters.
  c.train.allow_config_change = True
  with pytest.raises(ValueError, match=r'different model.*projector'):
    loop.train_and_evaluate(c, str(tmp_path), helpers.mesh(1))
