"""VICReg: the loss against a hand value and a numpy reference; 1 vs 8 devices."""
import numpy as np
import jax.numpy as jnp
import pytest

from ssl_jax import losses
from tests import helpers
from tests.methods import _contrastive_utils as utils


def vicreg_numpy(z1, z2, sim, std, cov, eps=1e-4):
  """Bardes et al. 2022 Eq. (1)-(6) as the official code weights them (variance term averaged
  over the two branches), with numpy's own var/cov."""
  z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
  n, d = z1.shape
  inv = np.sum((z1 - z2) ** 2) / (n * d)
  def v(z):
    return np.mean(np.maximum(0.0, 1.0 - np.sqrt(np.var(z, axis=0, ddof=1) + eps)))
  def c(z):
    m = np.cov(z, rowvar=False)          # (d, d), 1 / (n - 1)
    return (np.sum(m ** 2) - np.sum(np.diag(m) ** 2)) / d
  return sim * inv + std * (v(z1) + v(z2)) / 2 + cov * (c(z1) + c(z2))


def test_vicreg_hand_value():
  # z1 columns have std 0.5 (hinge 0.5 each) and covariance -0.25 -> c = 2 * 0.0625 / 2;
  # z2 has a constant column (hinge 1) and a std-2 column (hinge 0), no covariance;
  # invariance = (0 + 1 + .25 + 2.25 + 1 + 16) / 6.
  z1 = jnp.array([[0., 1.], [0.5, 0.5], [1., 0.]])
  z2 = jnp.array([[0., 0.], [0., 2.], [0., 4.]])
  loss, aux = losses.vicreg(z1, z2, 25.0, 25.0, 1.0, eps=0.0)
  np.testing.assert_allclose(float(aux['invariance']), 20.5 / 6, rtol=1e-6)
  np.testing.assert_allclose(float(aux['variance']), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(aux['covariance']), 0.0625, rtol=1e-6)
  np.testing.assert_allclose(float(loss), 25 * 20.5 / 6 + 25 * 0.5 + 0.0625, rtol=1e-6)


@pytest.mark.parametrize('coeffs', [(25.0, 25.0, 1.0), (1.0, 5.0, 0.1)])
def test_vicreg_matches_numpy(coeffs):
  rng = np.random.default_rng(0)
  z1 = (0.6 * rng.normal(size=(10, 5))).astype(np.float32)
  z2 = (z1 + 0.3 * rng.normal(size=(10, 5))).astype(np.float32)
  loss, _ = losses.vicreg(jnp.asarray(z1), jnp.asarray(z2), *coeffs)
  np.testing.assert_allclose(float(loss), vicreg_numpy(z1, z2, *coeffs), rtol=1e-5)


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
