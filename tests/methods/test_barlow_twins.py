"""Barlow Twins: the loss against a hand value and a numpy reference; 1 vs 8 devices."""
import numpy as np
import jax.numpy as jnp
import pytest

from ssl_jax import losses
from tests import helpers
from tests.methods import _contrastive_utils as utils


def barlow_numpy(z1, z2, lambd, eps=1e-5):
  """Zbontar et al. 2021 Eq. (1), written with explicit loops over the dimensions."""
  z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
  n, d = z1.shape
  a = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + eps)   # BatchNorm1d(affine=False), biased var
  b = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + eps)
  loss = 0.0
  for i in range(d):
    for j in range(d):
      c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
      loss += (1 - c_ij) ** 2 if i == j else lambd * c_ij ** 2
  return loss


def test_barlow_hand_value():
  # Standardised columns: z1 -> [[-1, 1], [1, -1]], z2 -> [[-1, -1], [1, 1]];
  # C = [[1, 1], [-1, -1]]: on-diagonal (1-1)^2 + (1+1)^2 = 4, off-diagonal 1 + 1 = 2.
  z1 = jnp.array([[1., 2.], [3., 0.]])
  z2 = jnp.array([[0., 0.], [2., 4.]])
  loss, aux = losses.barlow_twins(z1, z2, lambd=0.5, eps=0.0)
  np.testing.assert_allclose(float(aux['on_diag']), 4.0, rtol=1e-6)
  np.testing.assert_allclose(float(aux['off_diag']), 2.0, rtol=1e-6)
  np.testing.assert_allclose(float(loss), 5.0, rtol=1e-6)


@pytest.mark.parametrize('lambd', [0.0051, 0.3])
def test_barlow_matches_numpy(lambd):
  rng = np.random.default_rng(0)
  z1 = rng.normal(size=(12, 6)).astype(np.float32)
  z2 = (0.7 * z1 + 0.5 * rng.normal(size=(12, 6))).astype(np.float32)
  loss, _ = losses.barlow_twins(jnp.asarray(z1), jnp.asarray(z2), lambd)
  np.testing.assert_allclose(float(loss), barlow_numpy(z1, z2, lambd), rtol=1e-5)


def test_barlow_identical_standardised_views_have_zero_on_diagonal():
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.normal(size=(64, 4)), jnp.float32)
  _, aux = losses.barlow_twins(z, 3.0 * z + 1.0, eps=0.0)
  np.testing.assert_allclose(float(aux['on_diag']), 0.0, atol=1e-9)


@pytest.fixture(scope='module')
def runs():
  config = helpers.tiny(utils.load_config('barlow_twins'))
  config.method.proj_hidden_dim = 32
  config.method.proj_dim = 32
  return utils.run(config, 1, 2), utils.run(config, 8, 2)


def test_one_vs_eight_devices(runs):
  one, eight = runs
  for h1, h8 in zip(one['history'], eight['history']):
    np.testing.assert_allclose(h1['loss'], h8['loss'], rtol=1e-4)
    assert np.isfinite(h1['loss']) and h1['loss'] > 0
  helpers.assert_trees_close(one['state'].params, eight['state'].params)
  helpers.assert_trees_close(one['state'].buffers, eight['state'].buffers)
