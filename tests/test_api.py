"""The Python API (issue 29 item 7): a user's own method and own flax backbone, registered from
this file with explicit calls (no library edits), train 2 steps, evaluate with kNN, export and
load through ``ssl_jax.export.load_encoder``."""
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ssl_jax
from ssl_jax import config as config_lib
from ssl_jax import methods, models
from ssl_jax.methods.base import Method, apply_module, init_module
from tests import helpers


class TinyNet(nn.Module):
  """A user's backbone: one strided conv, ReLU, global mean pool -> (B, width)."""
  width: int = 8

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    return nn.relu(nn.Conv(self.width, (3, 3), strides=2, name='conv')(x)).mean(axis=(1, 2))


class Invariance(Method):
  """A user's method: pull the two views' features together, with a stop-gradient target."""

  def init(self, rng, batch):
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    params, _ = init_module(self.backbone, rng, x)
    return {'backbone': params}, {}

  def loss(self, params, state, views, rng):
    z1, _ = apply_module(self.backbone, params['backbone'], {}, views['view0'], train=True)
    z2, _ = apply_module(self.backbone, params['backbone'], {}, views['view1'], train=True)
    loss = jnp.mean((z1 - jax.lax.stop_gradient(z2)) ** 2)
    return loss, ({'gap': loss}, state.buffers)


@pytest.fixture(autouse=True)
def registered():
  ssl_jax.register_backbone('tinynet', lambda m: TinyNet(width=m.width),
                            feature_dim=lambda m: m.width)
  ssl_jax.register_method('invariance', Invariance)
  yield
  del methods.METHODS['invariance']
  models._REGISTERED.pop('tinynet')   # pylint: disable=protected-access
  models.BACKBONES = tuple(b for b in models.BACKBONES if b != 'tinynet')


def user_config():
  c = config_lib.base_config()
  c.method.name = 'invariance'
  c.model.backbone = 'tinynet'
  helpers.tiny(c, image_size=16, batch_size=8, steps=2)
  c.model.width = 8
  c.optim.name = 'adamw'
  c.data.eval_train_split = c.data.eval_split = 'test'
  c.eval.knn_ks, c.eval.knn_k, c.eval.batch_size = (5,), 5, 200
  c.eval.linear, c.eval.plot = False, ''
  return c


def test_user_method_and_backbone_train_evaluate_export(tmp_path):
  c = config_lib.validate(user_config())
  workdir = str(tmp_path / 'run')
  summary = ssl_jax.pretrain(c, workdir, helpers.mesh(1))
  assert summary['steps'] == 2, summary
  result = ssl_jax.evaluate(c, workdir, helpers.mesh(1), require_checkpoint=True)
  assert result['step'] == 2 and result['feature_dim'] == 8
  assert 0.0 <= result['knn_top1'] <= 1.0
  exported = ssl_jax.export.export(c, workdir, helpers.mesh(1))
  assert 'timm_skipped' in exported         # a user backbone has no timm twin
  model, variables = ssl_jax.export.load_encoder(exported['encoder'])
  assert isinstance(model, TinyNet) and model.width == 8
  x = np.random.RandomState(0).rand(2, 16, 16, 3).astype(np.float32)
  assert model.apply(variables, x).shape == (2, 8)


def test_registration_is_explicit_and_checked():
  with pytest.raises(ValueError, match='built in'):
    ssl_jax.register_backbone('resnet18', TinyNet)
  with pytest.raises(ValueError, match='built in'):
    ssl_jax.register_method('simclr', Invariance)
  with pytest.raises(TypeError, match='needs a class'):
    ssl_jax.register_method('mine', Invariance(user_config()))
  c = user_config()
  c.model.backbone = 'tinynett'
  with pytest.raises(ValueError, match=r"did you mean 'tinynet'.*choose one of \[.*'tinynet'\]"):
    config_lib.validate(c)                  # the registered backbone is one of the choices


def test_import_is_cheap():
  """``import ssl_jax`` loads neither JAX nor a method (the API functions import on call)."""
  code = ('import sys, ssl_jax; heavy = [m for m in sys.modules if m.split(".")[0] in '
          '("jax", "flax", "optax") or m.startswith("ssl_jax.")]; print(heavy)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == '[]', out.stdout
