"""Losses, head, masks and optimiser pieces of DINO / iBOT / data2vec (no train-step compiles).

The method-level tests (1 vs 8 devices, checkpoints, center order inside the method) are in
test_dino.py, test_ibot.py and test_data2vec.py, one compile-heavy module per method.
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_distillation.py."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.methods.distillation import dino as dino_lib
from ssl_jax.models.heads import DINOHead

# ----------------------------------------------------------------------------- DINO head

@pytest.mark.parametrize('norm_last_layer', [True, False])
def test_dino_head_weight_norm(norm_last_layer):
  head = DINOHead(out_dim=7, hidden_dim=8, bottleneck_dim=5, norm_last_layer=norm_last_layer)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 6))
  params = head.init(jax.random.PRNGKey(1), x)['params']
  assert ('last_layer_g' in params) == (not norm_last_layer)
  assert set(params) >= {'fc0', 'fc1', 'fc2', 'last_layer_v'}
  assert params['fc2']['kernel'].shape == (8, 5) and params['last_layer_v'].shape == (5, 7)
  # Reference: MLP (GELU) -> L2 normalise -> x @ (g * V / ||V||_col).
  h = x
  for i in range(2):
    h = jax.nn.gelu(h @ params[f'fc{i}']['kernel'] + params[f'fc{i}']['bias'], approximate=False)
  h = h @ params['fc2']['kernel'] + params['fc2']['bias']
  h = h / np.linalg.norm(h, axis=-1, keepdims=True)
  v = np.asarray(params['last_layer_v'])
  w = v / np.linalg.norm(v, axis=0, keepdims=True)
  if not norm_last_layer:
    params = jax.tree_util.tree_map(lambda a: a, params)
    params['last_layer_g'] = params['last_layer_g'] * 2.0
    w = w * 2.0
  out = head.apply({'params': params}, x)
  np.testing.assert_allclose(out, h @ w, rtol=1e-5, atol=1e-5)
  # With g = 1 every logit is a cosine similarity.
  if norm_last_layer:
    assert float(jnp.abs(out).max()) <= 1.0 + 1e-5


def test_dino_head_separate_patch_layer():
  head = DINOHead(out_dim=6, hidden_dim=8, bottleneck_dim=4, patch_out_dim=3)
  tokens = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6))
  params = head.init(jax.random.PRNGKey(1), tokens)['params']
  cls, patches = head.apply({'params': params}, tokens)
  assert cls.shape == (2, 1, 6) and patches.shape == (2, 4, 3)
  assert 'last_layer2_v' in params


# ----------------------------------------------------------------------------- optimiser pieces

def test_clip_by_leaf_norm_clips_each_tensor():
  tx = dino_lib.clip_by_leaf_norm(1.0)
  g = {'a': jnp.array([3.0, 4.0]), 'b': jnp.array([0.3, 0.4])}
  out, _ = tx.update(g, tx.init(g))
  np.testing.assert_allclose(out['a'], [0.6, 0.8], rtol=1e-5)
  np.testing.assert_allclose(out['b'], [0.3, 0.4], rtol=1e-7)


class _Cfg(dict):
  __getattr__ = dict.__getitem__

  def get(self, k, d=None):
    return dict.get(self, k, d)


def _dino_optimizer(total_steps, freeze_steps):
  """DINO.build_optimizer without building a backbone (only config is used)."""
  optim = _Cfg(name='adamw', lr=0.1, lr_scaling='none', warmup_steps=0, min_lr_ratio=1.0,
               weight_decay=0.04, b1=0.9, b2=0.999, clip_grad_norm=3.0, momentum=0.9)
  method = object.__new__(dino_lib.DINO)
  method.config = _Cfg(optim=optim, method=_Cfg(weight_decay_end=0.4,
                                                freeze_last_layer_steps=freeze_steps),
                       data=_Cfg(batch_size=256))
  method.hp = _Cfg(method.config.method)   # what Method.__init__ parses config.method into
  return method.build_optimizer(total_steps)


def test_weight_decay_schedule_and_frozen_last_layer():
  total, freeze = 10, 3
  tx, lr = _dino_optimizer(total, freeze)
  params = {'head': {'fc0': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)},
                     'last_layer_v': jnp.ones((2, 3))},
            'backbone': {'w': jnp.full((2, 2), 2.0)}}
  state = tx.init(params)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  for step in range(total):
    updates, state = tx.update(zeros, state, params)
    # Zero gradients: AdamW's update is -lr * wd(t) * p on decayed tensors (ndim > 1) only.
    wd = 0.4 - (0.4 - 0.04) * (math.cos(math.pi * step / total) + 1) / 2
    np.testing.assert_allclose(updates['backbone']['w'], -float(lr(step)) * wd * 2.0, rtol=1e-5)
    np.testing.assert_allclose(updates['head']['fc0']['bias'], 0.0)
    last = np.asarray(updates['head']['last_layer_v'])
    if step < freeze:
      np.testing.assert_array_equal(last, 0.0)
    else:
      np.testing.assert_allclose(last, -float(lr(step)) * wd * 1.0, rtol=1e-5)


def test_frozen_last_layer_ignores_gradients():
  tx, _ = _dino_optimizer(10, 2)
  params = {'head': {'last_layer_v': jnp.ones((2, 3)), 'fc0': {'kernel': jnp.ones((2, 2))}}}
  grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 5.0), params)
  state = tx.init(params)
  moved = []
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    moved.append(float(jnp.abs(updates['head']['last_layer_v']).max()))
    assert float(jnp.abs(updates['head']['fc0']['kernel']).max()) > 0
  assert moved[0] == moved[1] == 0.0 and moved[2] > 0.0
