"""losses.regression: every loss of the family against a hand-computed value and a literal numpy
transcription of its paper formula. Moved from the method tests (methods/test_byol.py,
methods/test_simsiam.py), which keep the methods' train steps."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import losses


def test_normalized_mse_hand_value():
  p = jnp.array([[2.0, 0.0], [0.0, 1.0]])
  z = jnp.array([[1.0, 1.0], [0.0, 5.0]])
  # row 0: cos = 1/sqrt(2) -> 2 - sqrt(2); row 1: identical directions -> 0.
  np.testing.assert_allclose(losses.normalized_mse(p, z), (2 - math.sqrt(2)) / 2, rtol=1e-6)


def test_normalized_mse_matches_numpy():
  rng = np.random.default_rng(1)
  p, z = rng.normal(size=(7, 6)), rng.normal(size=(7, 6))
  # Grill et al. Eq. 2: || p/||p|| - z/||z|| ||^2, batch mean.
  ref = np.mean([np.sum((p[i] / np.linalg.norm(p[i]) - z[i] / np.linalg.norm(z[i])) ** 2)
                 for i in range(7)])
  np.testing.assert_allclose(losses.normalized_mse(jnp.asarray(p), jnp.asarray(z)), ref,
                             rtol=1e-5)


def test_negative_cosine_hand_value():
  p = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  z = jnp.array([[1.0, 1.0], [0.0, -3.0]])
  np.testing.assert_allclose(losses.negative_cosine(p, z), -(1 / math.sqrt(2) - 1) / 2,
                             rtol=1e-6)


def test_negative_cosine_matches_numpy():
  rng = np.random.default_rng(2)
  p, z = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  # Chen & He Eq. 1: D(p, z) = - p/||p|| . z/||z||, batch mean.
  ref = np.mean([-(p[i] @ z[i]) / np.linalg.norm(p[i]) / np.linalg.norm(z[i]) for i in range(5)])
  np.testing.assert_allclose(losses.negative_cosine(jnp.asarray(p), jnp.asarray(z)), ref,
                             rtol=1e-5)


def test_stop_gradient_on_the_projection():
  """d/dz of D(p, stopgrad(z)) is zero, d/dp is not (the asymmetry that prevents collapse)."""
  p, z = jnp.array([[1.0, 2.0]]), jnp.array([[3.0, -1.0]])
  gp, gz = jax.grad(lambda p, z: losses.negative_cosine(p, jax.lax.stop_gradient(z)),
                    argnums=(0, 1))(p, z)
  assert np.abs(gp).sum() > 0 and np.abs(gz).sum() == 0
