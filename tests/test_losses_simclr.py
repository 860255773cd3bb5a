"""NT-Xent (SimCLR Eq. 1) against a hand-computed value and a literal numpy transcription."""
import math

import numpy as np
import pytest

from ssl_jax import losses


def nt_xent_reference(z1, z2, tau):
  """The paper's formula, one anchor at a time, in plain numpy."""
  z = np.concatenate([z1, z2]).astype(np.float64)
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  n2 = len(z)
  n = n2 // 2
  total = 0.0
  for i in range(n2):
    j = (i + n) % n2
    num = math.exp(z[i] @ z[j] / tau)
    den = sum(math.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
    total += -math.log(num / den)
  return total / n2


def test_nt_xent_hand_computed():
  # Two images whose two views coincide: for every anchor the positive has similarity 1 and the
  # two negatives 0, so each term is -log(e / (e + 2)) = log(1 + 2/e).
  z = np.array([[1.0, 0.0], [0.0, 3.0]])
  loss, acc = losses.nt_xent(z, z, temperature=1.0)
  assert float(loss) == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
  assert float(acc) == 1.0


def test_nt_xent_hand_computed_with_temperature():
  # z = [e1, e2 | e2, e1]: each anchor's positive is orthogonal (s = 0) while its two negatives
  # have s = 0 and s = 1, so with tau = 0.5 each term is -log(1 / (1 + 1 + e^2)).
  z1 = np.array([[1.0, 0.0], [0.0, 1.0]])
  z2 = np.array([[0.0, 1.0], [1.0, 0.0]])
  loss, acc = losses.nt_xent(z1, z2, temperature=0.5)
  assert float(loss) == pytest.approx(math.log(2 + math.exp(2.0)), rel=1e-6)
  assert float(acc) == 0.0


@pytest.mark.parametrize('tau', [0.1, 0.5, 1.0])
def test_nt_xent_matches_numpy_reference(tau):
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  loss, _ = losses.nt_xent(z1, z2, temperature=tau)
  assert float(loss) == pytest.approx(nt_xent_reference(z1, z2, tau), rel=1e-5)


def test_nt_xent_symmetric_in_views():
  rng = np.random.default_rng(1)
  z1, z2 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  a, _ = losses.nt_xent(z1, z2, 0.2)
  b, _ = losses.nt_xent(z2, z1, 0.2)
  assert float(a) == pytest.approx(float(b), rel=1e-6)
