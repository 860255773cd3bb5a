"""LeJEPA method: the loss of a real step against the formula on hand-recomputed projections,
and the 1-vs-8-device equality of loss, SIGReg and gradients (SGD parameters after the first
steps). A tiny ViT (D=32, depth 1, 16 px globals, 8 px locals), BatchNorm in the projector."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lejepa as lejepa_config
from ssl_jax import losses
from tests import helpers
from tests.losses.test_jepa import lejepa_numpy

STEPS = 2


def tiny_config():
  c = helpers.tiny(lejepa_config.get_config('builtin'), image_size=16, batch_size=16,
                   steps=STEPS)
  c.model.backbone, c.model.depth = 'vit_tiny', 1
  m = c.method
  m.num_global_crops, m.num_local_crops, m.local_crop_size = 2, 2, 8
  m.num_slices, m.proj_hidden_dim, m.proj_dim = 32, 32, 16
  m.lambd = 0.3
  # SGD: linear in the gradients, so equal parameters after a step mean equal gradients.
  c.optim.name, c.optim.lr = 'sgd', 0.5
  return c


@pytest.fixture(scope='module')
def one_device():
  from ssl_jax.train import loop  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  exp = loop.Experiment(tiny_config(), tempfile.mkdtemp(), helpers.mesh(1))
  state = exp.initial_state()
  init = jax.device_get(state)
  from ssl_jax.train import sharding  # pylint: disable=g-import-not-at-top
  history = []
  for i in range(STEPS):
    state, metrics = exp.step_fn(state, sharding.global_batch(exp.mesh, exp.train_ds[i]))
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return exp, init, jax.device_get(state), history


def test_loss_is_the_formula_on_recomputed_projections(one_device):
  """method.loss = (1 - lambda) prediction + lambda SIGReg of the projector outputs of all four
  crops (globals first), the directions drawn from the loss key's second half."""
  exp, _, _, _ = one_device
  method = exp.method
  st = exp.initial_state()   # on device, not a host copy of buffers the steps donated
  views = jax.jit(method.views)(exp.train_ds[0], jax.random.PRNGKey(0))
  rng = jax.random.PRNGKey(1)
  loss, (metrics, new_buffers) = jax.jit(method.loss)(st.params, st, views, rng)

  @jax.jit
  def projections(params, stats):
    crops = [views[k] for k in ('global0', 'global1', 'local0', 'local1')]
    feats = jnp.concatenate([method.backbone.apply({'params': params['backbone']}, x)
                             for x in crops])
    z, upd = method.projector.apply({'params': params['projector'], 'batch_stats': stats}, feats,
                                    train=True, mutable=['batch_stats'])
    return z.reshape(4, 16, -1), upd['batch_stats']

  z, stats = projections(st.params, st.buffers['batch_stats']['projector'])
  a = losses.random_directions(jax.random.split(rng)[1], 16, 32)
  want, pred, reg = lejepa_numpy(z, 2, a, 0.3)
  np.testing.assert_allclose(metrics['prediction'], pred, rtol=1e-4)
  np.testing.assert_allclose(metrics['sigreg'], reg, rtol=1e-3)
  np.testing.assert_allclose(loss, want, rtol=1e-3)
  helpers.assert_trees_close(new_buffers['batch_stats']['projector'], stats)


def test_training_steps_are_finite_and_move_the_encoder(one_device):
  _, init, state, history = one_device
  assert all(h['nonfinite'] == 0 and np.isfinite(h['loss']) for h in history)
  assert all(h['sigreg'] > 0 for h in history)
  moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()),
                                 init.params['backbone'], state.params['backbone'])
  assert max(jax.tree_util.tree_leaves(moved)) > 0


def test_one_vs_eight_devices_loss_sigreg_and_gradients(one_device):
  """The global batch split over 8 devices: the same loss, the same SIGReg (a statistic of the
  whole batch, not a mean of per-device ones) and the same gradients (SGD parameters)."""
  _, _, state1, hist1 = one_device
  state8, hist8 = helpers.run_steps(tiny_config(), 8, STEPS)
  for h1, h8 in zip(hist1, hist8):
    np.testing.assert_allclose(h8['loss'], h1['loss'], rtol=1e-5)
    np.testing.assert_allclose(h8['sigreg'], h1['sigreg'], rtol=1e-5)
    np.testing.assert_allclose(h8['grad_norm'], h1['grad_norm'], rtol=1e-4)
  helpers.assert_trees_close(state8.params, state1.params, rtol=1e-4, atol=1e-5)
  helpers.assert_trees_close(state8.buffers, state1.buffers, rtol=1e-4, atol=1e-5)
