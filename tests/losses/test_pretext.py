"""losses.pretext: every loss of the family against a hand-computed value and a literal numpy
transcription of its paper formula. Moved from the method tests (methods/test_hybrid.py,
methods/test_pretext.py), which keep the methods' train steps."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses


def np_uncertainty(task_losses, log_vars, classification=None):
  """Kendall et al. (2018) with sigma^2 = exp(s): L / (2 sigma^2) + log sigma for a regression
  task (Eq. 7), L / sigma^2 + log sigma for a classification task (Eq. 10)."""
  sigma2 = np.exp(np.asarray(log_vars, np.float64))
  cls = np.zeros(len(sigma2), bool) if classification is None else np.asarray(classification)
  denom = np.where(cls, sigma2, 2 * sigma2)
  return float(np.sum(np.asarray(task_losses) / denom + np.log(np.sqrt(sigma2))))


def np_cross_entropy(logits, labels, weights=None):
  """Plain numpy softmax cross-entropy, written from the definition."""
  logits = np.asarray(logits, np.float64)
  m = logits.max(-1, keepdims=True)
  logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
  nll = -logp[np.arange(len(labels)), labels]
  w = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
  return (w * nll).sum() / w.sum()


def test_uncertainty_weighted_sum_hand_value():
  total, w = losses.uncertainty_weighted_sum(jnp.array([2.0, 1.0, 0.5]),
                                             jnp.array([0.0, np.log(4.0), -np.log(2.0)]))
  # 0.5*2 + 0   +   0.5*(1/4)*1 + 0.5*log 4   +   0.5*2*0.5 - 0.5*log 2
  hand = 1.0 + 0.125 + 0.5 * np.log(4.0) + 0.5 - 0.5 * np.log(2.0)
  np.testing.assert_allclose(total, hand, rtol=1e-6)
  np.testing.assert_allclose(w, [0.5, 0.125, 1.0], rtol=1e-6)
  rng = np.random.default_rng(0)
  l, s = rng.uniform(0.1, 5, 4), rng.normal(size=4)
  np.testing.assert_allclose(losses.uncertainty_weighted_sum(jnp.asarray(l), jnp.asarray(s))[0],
                             np_uncertainty(l, s), rtol=1e-5)
  cls = (True, False, True, False)
  total, w = losses.uncertainty_weighted_sum(jnp.asarray(l), jnp.asarray(s), classification=cls)
  np.testing.assert_allclose(total, np_uncertainty(l, s, cls), rtol=1e-5)
  np.testing.assert_allclose(w, np.exp(-s) * np.array([1.0, 0.5, 1.0, 0.5]), rtol=1e-5)
  with pytest.raises(ValueError, match='3 entries for 4 task losses'):
    losses.uncertainty_weighted_sum(jnp.asarray(l), jnp.asarray(s), classification=cls[:3])


def test_uncertainty_minimiser_is_log_loss():
  """Gradient descent on s alone converges to s_i = log L_i: scaling a task's loss by 10 lowers
  its weight by 10."""
  task = jnp.array([3.0, 0.3])
  grad = jax.grad(lambda s: losses.uncertainty_weighted_sum(task, s)[0])
  s = jnp.zeros(2)
  for _ in range(500):
    s = s - 0.5 * grad(s)
  np.testing.assert_allclose(s, np.log([3.0, 0.3]), atol=1e-3)
  # classification form: the minimiser is s = log(2 L)
  grad = jax.grad(lambda s: losses.uncertainty_weighted_sum(task, s, (True, True))[0])
  s = jnp.zeros(2)
  for _ in range(1000):
    s = s - 0.25 * grad(s)
  np.testing.assert_allclose(s, np.log([6.0, 0.6]), atol=1e-3)


def test_pretext_cross_entropy_hand_value():
  logits = jnp.array([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
  labels = jnp.array([0, 1, 2])
  loss, acc = losses.pretext_cross_entropy(logits, labels)
  # -log softmax: log(1 + 3 e^-2), log(1 + 3 e^-1), log(3 + e^3) - 0
  hand = (np.log(1 + 3 * np.exp(-2.0)) + np.log(1 + 3 * np.exp(-1.0))
          + np.log(3 + np.exp(3.0))) / 3
  np.testing.assert_allclose(loss, hand, rtol=1e-6)
  np.testing.assert_allclose(acc, 2 / 3, rtol=1e-6)
  # weights: only the first example counts
  loss_w, acc_w = losses.pretext_cross_entropy(logits, labels, jnp.array([1.0, 0.0, 0.0]))
  np.testing.assert_allclose(loss_w, np.log(1 + 3 * np.exp(-2.0)), rtol=1e-6)
  assert float(acc_w) == 1.0


def test_pretext_cross_entropy_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(32, 7)) * 3
  labels = rng.integers(0, 7, 32)
  weights = rng.uniform(size=32)
  np.testing.assert_allclose(losses.pretext_cross_entropy(jnp.asarray(logits), labels)[0],
                             np_cross_entropy(logits, labels), rtol=1e-5)
  np.testing.assert_allclose(
      losses.pretext_cross_entropy(jnp.asarray(logits), labels, jnp.asarray(weights))[0],
      np_cross_entropy(logits, labels, weights), rtol=1e-5)


def test_colorization_loss_hand_and_numpy():
  # one pixel, Q = 2: target (0.75, 0.25), logits (0, log 3) -> p = (1/4, 3/4), weight 2
  logits = jnp.array([0.0, np.log(3.0)]).reshape(1, 1, 1, 2)
  target = jnp.array([0.75, 0.25]).reshape(1, 1, 1, 2)
  hand = -2 * (0.75 * np.log(0.25) + 0.25 * np.log(0.75))
  np.testing.assert_allclose(losses.colorization_rebalanced_ce(logits, target, jnp.full((1, 1, 1), 2.0)),
                             hand, rtol=1e-6)
  rng = np.random.default_rng(0)
  lg = rng.normal(size=(2, 3, 3, 5))
  t = rng.uniform(size=(2, 3, 3, 5)); t /= t.sum(-1, keepdims=True)
  v = rng.uniform(size=(2, 3, 3))
  logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
  ref = np.mean(v * -(t * logp).sum(-1))
  np.testing.assert_allclose(losses.colorization_rebalanced_ce(jnp.asarray(lg), jnp.asarray(t),
                                                               jnp.asarray(v)), ref, rtol=1e-5)
