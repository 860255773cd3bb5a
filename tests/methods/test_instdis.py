"""InstDis: the full-softmax loss and the memory-bank update against hand values and numpy; the
bank is updated by scatter at the batch's indices; 1 vs 8 devices; exact checkpoint restore."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses
from tests import helpers
from tests.methods import _contrastive_utils as utils


def instdis_numpy(v, bank, index, tau):
  """Wu et al. 2018 Eq. (2): -log exp(v_i.v / tau) / sum_j exp(v_j.v / tau), averaged."""
  v, bank = np.asarray(v, np.float64), np.asarray(bank, np.float64)
  total = 0.0
  for b in range(len(v)):
    logits = [bank[j] @ v[b] / tau for j in range(len(bank))]
    total -= logits[index[b]] - math.log(sum(math.exp(x) for x in logits))
  return total / len(v)


def test_instdis_hand_value():
  bank = jnp.array([[1., 0.], [0., 1.], [0.6, 0.8]])
  v = jnp.array([[1., 0.]])
  loss, acc = losses.instance_discrimination(v, bank, jnp.array([0]), temperature=1.0)
  np.testing.assert_allclose(float(loss), -(1 - math.log(math.e + 1 + math.exp(0.6))), rtol=1e-6)
  assert float(acc) == 1.0


def test_instdis_matches_numpy():
  rng = np.random.default_rng(0)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  bank = unit(rng.normal(size=(40, 8))).astype(np.float32)
  v = unit(rng.normal(size=(6, 8))).astype(np.float32)
  index = rng.choice(40, 6, replace=False)
  loss, _ = losses.instance_discrimination(jnp.asarray(v), jnp.asarray(bank),
                                           jnp.asarray(index), 0.07)
  np.testing.assert_allclose(float(loss), instdis_numpy(v, bank, index, 0.07), rtol=1e-5)


def test_memory_bank_update_hand_values():
  bank = jnp.array([[1., 0.], [0., 1.], [0.6, 0.8]])
  new = losses.memory_bank_update(bank, jnp.array([0]), jnp.array([[0., 1.]]), momentum=0.5)
  r = 1 / math.sqrt(2)
  np.testing.assert_allclose(np.asarray(new), [[r, r], [0, 1], [0.6, 0.8]], rtol=1e-6)
  # An index twice in a batch: the last occurrence wins, deterministically.
  new = losses.memory_bank_update(bank, jnp.array([2, 2]), jnp.array([[1., 0.], [0., 1.]]), 0.5)
  np.testing.assert_allclose(np.asarray(new[2]), np.array([0.3, 0.9]) / math.hypot(0.3, 0.9),
                             rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(new[:2]), np.asarray(bank[:2]))


@pytest.fixture(scope='module')
def runs():
  config = helpers.tiny(utils.load_config('instdis'))
  config.method.feature_dim = 16
  bank = lambda s: s.buffers['bank']
  return utils.run(config, 1, 2, bank), utils.run(config, 8, 2, bank)


def test_bank_has_one_row_per_training_image(runs):
  one, _ = runs
  assert one['init'].buffers['bank'].shape == (4000, 16)   # mnist5k 'train' split


def test_bank_scatter_at_batch_indices(runs):
  one, _ = runs
  exp = one['exp']
  idx0 = np.asarray(exp.train_ds[0]['index'])
  idx1 = np.asarray(exp.train_ds[1]['index'])
  b0, b1, bank_init = one['snaps'][0], one['snaps'][1], one['init'].buffers['bank']
  untouched = np.setdiff1d(np.arange(4000), idx0)
  np.testing.assert_array_equal(b0[untouched], bank_init[untouched])
  changed = np.abs(b0[idx0] - bank_init[idx0]).max(axis=1)
  assert (changed > 1e-3).all()
  np.testing.assert_allclose(np.linalg.norm(b0[idx0], axis=1), 1.0, rtol=1e-5)
  # Step 1 only touches its own indices.
  untouched = np.setdiff1d(np.arange(4000), idx1)
  np.testing.assert_array_equal(b1[untouched], b0[untouched])


def test_one_vs_eight_devices(runs):
  one, eight = runs
  for h1, h8 in zip(one['history'], eight['history']):
    np.testing.assert_allclose(h1['loss'], h8['loss'], rtol=1e-4)
    assert h1['loss'] > math.log(4000) * 0.5
  helpers.assert_trees_close(one['state'].params, eight['state'].params)
  helpers.assert_trees_close(one['state'].buffers, eight['state'].buffers)


def test_checkpoint_restores_bank_exactly(runs):
  _, eight = runs
  utils.assert_restores_exactly(eight['exp'], eight['state'])
