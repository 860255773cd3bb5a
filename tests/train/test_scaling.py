"""Precision and memory levers: gradient accumulation, bf16 compute, the ahead-of-time memory check."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from configs import mae, simclr
from ssl_jax import config as config_lib
from ssl_jax.train import memory, sharding
from ssl_jax.train import step as step_lib
from ssl_jax.train.state import TrainState
from tests import helpers


class _LinearMethod:
  """A method whose loss is a per-example mean (so k equal micro-batches = the whole batch) and
  whose buffers count the examples they have seen (so threading through micro-batches shows)."""

  def views(self, batch, key):
    del key
    return batch

  def loss(self, params, state, views, key):
    del key
    pred = views['x'] @ params['w']
    loss = jnp.mean((pred - views['y']) ** 2)
    seen = state.buffers['seen'] + views['x'].shape[0]
    return loss, ({'mean_pred': jnp.mean(pred)}, {'seen': seen, 'last': seen})

  def after_update(self, state):
    return state


def _linear_state(tx):
  params = {'w': jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)}
  return TrainState.create(params=params, tx=tx, buffers={'seen': jnp.zeros((), jnp.int32),
                                                          'last': jnp.zeros((), jnp.int32)})


def test_grad_accumulation_equals_one_big_batch():
  rng = np.random.default_rng(1)
  batch = {'x': jnp.asarray(rng.normal(size=(12, 5)), jnp.float32),
           'y': jnp.asarray(rng.normal(size=(12, 3)), jnp.float32)}
  tx = optax.sgd(0.1)
  method = _LinearMethod()
  one, m1 = jax.jit(step_lib.make_train_step(method, 0))(_linear_state(tx), batch)
  acc, m3 = jax.jit(step_lib.make_train_step(method, 0, accum_steps=3))(_linear_state(tx), batch)
  np.testing.assert_allclose(acc.params['w'], one.params['w'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m3['loss'], m1['loss'], rtol=1e-5)
  np.testing.assert_allclose(m3['grad_norm'], m1['grad_norm'], rtol=1e-5)
  # Buffers went through the three micro-batches of 4 in order: 4, 8, 12 examples seen.
  assert int(acc.buffers['seen']) == 12 and int(one.buffers['seen']) == 12
  assert int(acc.step) == 1
  # Strided micro-batches: micro-batch i holds rows i, i+3, i+6, i+9.
  micro = step_lib._micro_batches(batch, 3)  # pylint: disable=protected-access
  np.testing.assert_array_equal(micro['x'][1], np.asarray(batch['x'])[1::3])


def test_grad_accumulation_runs_a_real_method_on_8_devices():
  c = helpers.tiny(simclr.get_config('builtin'), batch_size=32, steps=2)
  c.optim.grad_accum_steps = 2
  state, history = helpers.run_steps(c, 8, 2)
  assert int(state.step) == 2 and all(np.isfinite(h['loss']) for h in history)


def test_grad_accumulation_config_errors():
  c = helpers.tiny(simclr.get_config('builtin'), batch_size=32)
  c.optim.grad_accum_steps = 3
  with pytest.raises(ValueError, match='optim.grad_accum_steps'):
    config_lib.validate(c)
  c.optim.grad_accum_steps = 8
  with pytest.raises(ValueError, match='optim.grad_accum_steps'):
    config_lib.validate(c, num_devices=8)   # micro-batches of 4 over 8 devices


def test_bf16_compute_keeps_float32_params_and_loss():
  c = helpers.tiny(mae.get_config('builtin'), batch_size=16, steps=2)
  c.model.dtype = 'bfloat16'
  state, history = helpers.run_steps(c, 1, 2)
  dtypes = {x.dtype for x in jax.tree_util.tree_leaves((state.params, state.opt_state))
            if jnp.issubdtype(x.dtype, jnp.floating)}
  assert dtypes == {jnp.dtype(jnp.float32)}
  assert all(np.isfinite(h['loss']) for h in history)
  # Same model in float32 from the same init: the bf16 loss agrees to bf16 precision.
  c32 = helpers.tiny(mae.get_config('builtin'), batch_size=16, steps=2)
  _, history32 = helpers.run_steps(c32, 1, 1)
  assert history[0]['loss'] == pytest.approx(history32[0]['loss'], rel=3e-2)


def _vit_config(axes, shape):
  c = helpers.tiny(mae.get_config('builtin'), batch_size=16)
  c.model.embed_dim, c.model.depth = 64, 2
  c.mesh = ConfigDict({'axes': axes, 'shape': shape, 'fsdp_min_size': 1024, 'rules': ()})
  return c


def test_memory_report_sees_fsdp_shrink_the_state():
  devices = jax.devices()[:8]
  dp = _vit_config(('data',), (-1,))
  fsdp = _vit_config(('data', 'fsdp'), (-1, 4))
  r_dp = memory.memory_report(dp, sharding.make_mesh(dp.mesh, devices))
  r_fsdp = memory.memory_report(fsdp, sharding.make_mesh(fsdp.mesh, devices))
  assert r_dp['devices'] == r_fsdp['devices'] == 8
  assert r_dp['total_bytes_per_device'] > r_dp['params_bytes_per_device'] > 0
  # Large leaves are split 4 ways; small ones (biases, norms) stay replicated.
  assert r_fsdp['params_bytes_per_device'] < 0.5 * r_dp['params_bytes_per_device']
  assert r_fsdp['opt_state_bytes_per_device'] < 0.5 * r_dp['opt_state_bytes_per_device']
  text = memory.format_report(r_fsdp)
  assert 'total_bytes_per_device' in text and 'GiB' in text
