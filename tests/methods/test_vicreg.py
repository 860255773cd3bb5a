"""VICReg: the loss against a hand value and a numpy reference; 1 vs 8 devices.
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_redundancy.py."""
import numpy as np
import pytest

from tests import helpers
from tests.methods import _contrastive_utils as utils


@pytest.fixture(scope='module')
def runs():
  config = helpers.tiny(utils.load_config('vicreg'))
  config.method.proj_hidden_dim = 32
  config.method.proj_dim = 32
  return utils.run(config, 1, 2), utils.run(config, 8, 2)


def test_one_vs_eight_devices(runs):
  one, eight = runs
  for h1, h8 in zip(one['history'], eight['history']):
    for k in ('loss', 'invariance', 'variance', 'covariance'):
      np.testing.assert_allclose(h1[k], h8[k], rtol=1e-4, err_msg=k)
  helpers.assert_trees_close(one['state'].params, eight['state'].params)
  helpers.assert_trees_close(one['state'].buffers, eight['state'].buffers)
