"""losses.jepa: the Epps-Pulley statistic against a literal numpy transcription of its integral,
its behaviour on Gaussian / non-Gaussian / collapsed samples, SIGReg's directions, the LeJEPA loss
against its formula, and SIGReg's value and gradient on 1 vs 8 devices (a global-batch statistic:
the place where data-parallel PyTorch implementations went wrong)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from ssl_jax import losses
from tests import helpers


def epps_pulley_numpy(x, t_max=3.0, knots=17):
  """N * integral over [-t_max, t_max] of |ecf(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt, per column,
  by the trapezoid rule on the symmetric grid of 2 * knots - 1 nodes (the official code's
  half-grid with doubled weights is exactly this, the integrand being even)."""
  x = np.asarray(x, np.float64)
  t = np.linspace(-t_max, t_max, 2 * knots - 1)
  xt = x[..., None] * t                                     # (N, M, T)
  ecf = np.exp(1j * xt).mean(0)                             # (M, T)
  integrand = np.abs(ecf - np.exp(-t ** 2 / 2)) ** 2 * np.exp(-t ** 2 / 2)
  dt = t[1] - t[0]
  return x.shape[0] * (integrand.sum(-1) - 0.5 * (integrand[:, 0] + integrand[:, -1])) * dt


def test_epps_pulley_matches_the_integral_on_a_hand_case():
  x = np.array([[-1.0, 0.0], [0.5, 0.0], [2.0, 3.0]], np.float32)
  got = np.asarray(losses.epps_pulley(jnp.asarray(x)))
  np.testing.assert_allclose(got, epps_pulley_numpy(x), rtol=1e-5)
  # The quadrature against a fine grid of the same integral (t_max 3 truncates a tail whose
  # Gaussian weight is < 1.2 %).
  fine = epps_pulley_numpy(x, knots=3001)
  np.testing.assert_allclose(got, fine, rtol=3e-2)
  # Hand value of the second column at t = 0: ecf(0) = 1 = phi(0), so only t != 0 contributes;
  # two samples at 0 and one at 3 give ecf(t) = (2 + exp(3it)) / 3.
  t = np.linspace(0, 3, 17)
  w = np.full(17, 2 * 3 / 16)
  w[[0, -1]] = 3 / 16
  err = np.abs((2 + np.exp(3j * t)) / 3 - np.exp(-t ** 2 / 2)) ** 2
  np.testing.assert_allclose(got[1], 3 * np.sum(err * w * np.exp(-t ** 2 / 2)), rtol=1e-5)


def test_epps_pulley_small_for_gaussian_large_otherwise():
  n = 2048
  g = jax.random.normal(jax.random.PRNGKey(0), (n, 16))
  u = jax.random.uniform(jax.random.PRNGKey(1), (n, 16), minval=-3 ** 0.5, maxval=3 ** 0.5)
  stat_g = float(jnp.mean(losses.epps_pulley(g)))
  stat_u = float(jnp.mean(losses.epps_pulley(u)))      # mean 0, variance 1, not Gaussian
  stat_c = losses.epps_pulley(jnp.full((n, 3), 0.7))    # collapsed: one point
  stat_s = float(jnp.mean(losses.epps_pulley(3.0 * g)))  # Gaussian with the wrong scale
  assert stat_g < 1.0, stat_g        # O(1) under the null (its mean is ~0.3 here)
  assert stat_u > 20 * stat_g and stat_s > 100 * stat_g
  assert float(stat_c.min()) > 0.2 * n
  # Collapsed samples at c: ecf = exp(itc), a constant fraction of N whatever c.
  np.testing.assert_allclose(stat_c, epps_pulley_numpy(np.full((n, 3), 0.7)), rtol=1e-4)


def test_sigreg_directions_unit_resampled_per_key_and_shared_by_views():
  a = losses.random_directions(jax.random.PRNGKey(0), 8, 32)
  np.testing.assert_allclose(np.linalg.norm(a, axis=0), 1.0, rtol=1e-5)
  b = losses.random_directions(jax.random.PRNGKey(1), 8, 32)
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 0.1
  z = jax.random.normal(jax.random.PRNGKey(2), (64, 8))
  want = np.mean(epps_pulley_numpy(np.asarray(z) @ np.asarray(a)))
  np.testing.assert_allclose(losses.sigreg(z, jax.random.PRNGKey(0), 32), want, rtol=1e-4)


def lejepa_numpy(z, num_global, a, lambd):
  z = np.asarray(z, np.float64)
  mu = z[:num_global].mean(0)
  pred = np.mean([(mu - zv) ** 2 for zv in z])
  reg = np.mean([np.mean(epps_pulley_numpy(zv @ np.asarray(a, np.float64))) for zv in z])
  return (1 - lambd) * pred + lambd * reg, pred, reg


def test_lejepa_loss_matches_formula():
  z = jax.random.normal(jax.random.PRNGKey(3), (4, 6, 5)) * jnp.array([1.0, 2.0, 0.5, 1.0, 1.0])
  key = jax.random.PRNGKey(4)
  a = losses.random_directions(key, 5, 16)
  loss, aux = losses.lejepa_loss(z, 2, key, 0.3, num_slices=16)
  want, pred, reg = lejepa_numpy(z, 2, a, 0.3)
  np.testing.assert_allclose(aux['prediction'], pred, rtol=1e-5)
  np.testing.assert_allclose(aux['sigreg'], reg, rtol=1e-4)
  np.testing.assert_allclose(loss, want, rtol=1e-4)
  # The targets are the mean of the *global* views only: using all views would differ.
  assert abs(np.mean((np.asarray(z).mean(0) - np.asarray(z)) ** 2) - pred) > 1e-3


@pytest.fixture(scope='module')
def encoder_problem():
  """A linear encoder z = x W on 64 samples: SIGReg of its output as a function of W."""
  x = jax.random.normal(jax.random.PRNGKey(5), (64, 6)) ** 3      # heavy-tailed inputs
  w = jax.random.normal(jax.random.PRNGKey(6), (6, 4)) * 0.5
  key = jax.random.PRNGKey(7)

  def loss(w, x):
    z = (x @ w).reshape(2, 32, 4)     # 2 views of 32 samples, each view on 4 of the 8 devices
    return losses.lejepa_loss(z, 1, key, 0.5, num_slices=8)[0]
  return x, w, loss


def test_value_and_gradient_equal_on_one_and_eight_devices(encoder_problem):
  """The batch sharded over 8 devices under jit: the same loss and gradient as on one device
  (the means of the characteristic function and their backward are global). A per-device
  statistic (the DDP bug) is checked to differ, so this test can tell them apart."""
  x, w, loss = encoder_problem
  f = jax.jit(jax.value_and_grad(loss))
  v1, g1 = f(w, jax.device_put(x, helpers.mesh(1).devices.flat[0]))
  mesh8 = helpers.mesh(8)
  x8 = jax.device_put(x, NamedSharding(mesh8, P('data')))
  assert len(x8.sharding.device_set) == 8
  v8, g8 = f(w, x8)
  np.testing.assert_allclose(v8, v1, rtol=1e-5)
  np.testing.assert_allclose(g8, g1, rtol=1e-4, atol=1e-6)
  # What a per-device SIGReg (8 samples per device) would give instead.
  key = jax.random.PRNGKey(7)
  a = losses.random_directions(key, 4, 8)
  z = np.asarray(x @ w).reshape(2, 4, 8, 4)     # (view, device, sample, dim)
  local = np.mean([np.mean(epps_pulley_numpy(z[v, d] @ np.asarray(a))) for v in range(2)
                   for d in range(4)])
  global_ = np.mean([np.mean(epps_pulley_numpy(z[v].reshape(32, 4) @ np.asarray(a)))
                     for v in range(2)])
  assert abs(local - global_) > 0.1 * global_
