"""losses.redundancy: every loss of the family against a hand-computed value and a literal numpy
transcription of its paper formula. Moved from the method tests (methods/test_barlow_twins.py,
methods/test_vicreg.py), which keep the methods' train steps."""
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses


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
