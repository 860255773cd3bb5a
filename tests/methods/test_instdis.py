"""InstDis: the full-softmax loss and the memory-bank update against hand values and numpy; the
bank is updated by scatter at the batch's indices; 1 vs 8 devices; exact checkpoint restore.
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_contrastive.py."""
import math

import numpy as np
import pytest

from tests import helpers
from tests.methods import _contrastive_utils as utils


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
