"""losses.clustering: every loss of the family against a hand-computed value and a literal numpy
transcription of its paper formula. Moved from the method tests (methods/test_swav.py), which
keep the methods' train steps."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import losses


def sinkhorn_numpy(out, epsilon=0.05, iters=3):
  q = np.exp(np.asarray(out, np.float64) / epsilon).T
  b, k = q.shape[1], q.shape[0]
  q /= q.sum()
  for _ in range(iters):
    q /= q.sum(axis=1, keepdims=True)
    q /= k
    q /= q.sum(axis=0, keepdims=True)
    q /= b
  return (q * b).T


def swav_numpy(scores, assign=(0, 1), temperature=0.1, epsilon=0.05, iters=3, queue=None):
  bs, n_crops, loss = scores[0].shape[0], len(scores), 0.0
  for i, s in enumerate(assign):
    out = np.asarray(scores[s], np.float64)
    if queue is not None:
      out = np.concatenate([queue[i], out])
    q = sinkhorn_numpy(out, epsilon, iters)[-bs:]
    sub = 0.0
    for v in np.delete(np.arange(n_crops), s):
      x = np.asarray(scores[v], np.float64) / temperature
      log_p = x - x.max(1, keepdims=True)
      log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
      sub -= np.mean(np.sum(q * log_p, axis=1))
    loss += sub / (n_crops - 1)
  return loss / len(assign)


def test_sinkhorn_hand_values():
  # exp(scores / eps) = [[3, 1], [1, 1]]; one iteration by hand: Q = [[.3, 1/6], [.2, 1/3]] (K x B)
  # -> codes B Q^T = [[.6, .4], [1/3, 2/3]].
  m = np.array([[3., 1.], [1., 1.]])
  codes = losses.sinkhorn_knopp(jnp.asarray(0.05 * np.log(m), jnp.float32), 0.05, iterations=1)
  np.testing.assert_allclose(np.asarray(codes), [[0.6, 0.4], [1 / 3, 2 / 3]], rtol=1e-5)
  # A doubly stochastic kernel is a fixed point: codes = M / 3.
  m = np.array([[2., 1.], [1., 2.]])
  codes = losses.sinkhorn_knopp(jnp.asarray(0.05 * np.log(m), jnp.float32), 0.05, iterations=3)
  np.testing.assert_allclose(np.asarray(codes), m / 3, rtol=1e-5)


def test_sinkhorn_marginals():
  rng = np.random.default_rng(0)
  b, k = 32, 8
  z = rng.normal(size=(b, 16))
  c = rng.normal(size=(k, 16))
  scores = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (c / np.linalg.norm(c, axis=1,
                                                                                keepdims=True)).T
  scores = jnp.asarray(scores, jnp.float32)
  for iters in (3, 100):
    q = np.asarray(losses.sinkhorn_knopp(scores, 0.05, iters), np.float64)
    # The last step normalises samples: every code is a distribution over the K prototypes.
    np.testing.assert_allclose(q.sum(1), np.ones(b), rtol=1e-5)
    assert (q >= 0).all()
  # Equal partition: each prototype gets B/K of the mass (exactly in the limit).
  np.testing.assert_allclose(q.sum(0), np.full(k, b / k), rtol=1e-3)
  # After 3 iterations (the paper's setting) the prototype marginals are already much closer to
  # B/K than the plain softmax assignment's.
  q3 = np.asarray(losses.sinkhorn_knopp(scores, 0.05, 3))
  soft = np.asarray(jax.nn.softmax(scores / 0.05, axis=1))
  assert np.abs(q3.sum(0) - b / k).sum() < 0.5 * np.abs(soft.sum(0) - b / k).sum()
  np.testing.assert_allclose(q3, sinkhorn_numpy(scores, 0.05, 3), rtol=1e-4, atol=1e-6)


def test_sinkhorn_valid_mask_equals_dropping_columns():
  rng = np.random.default_rng(1)
  scores = jnp.asarray(rng.uniform(-1, 1, size=(12, 5)), jnp.float32)
  valid = jnp.asarray([False] * 4 + [True] * 8)
  masked = losses.sinkhorn_knopp(scores, 0.05, 3, valid)
  np.testing.assert_allclose(np.asarray(masked[4:]), sinkhorn_numpy(scores[4:]), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_array_equal(np.asarray(masked[:4]), 0.0)


def test_swav_hand_value():
  # B = 1: the codes are uniform (1/2, 1/2) whatever the scores. Crop 1 (scores 0, 0) predicts
  # crop 0's code: log 2; crop 0 (logits 1, 0) predicts crop 1's: log(1 + e) - 1/2.
  s0 = jnp.array([[0.1, 0.0]])
  s1 = jnp.array([[0.0, 0.0]])
  loss, _ = losses.swav([s0, s1], (0, 1), temperature=0.1)
  np.testing.assert_allclose(float(loss), (math.log(2) + math.log(1 + math.e) - 0.5) / 2,
                             rtol=1e-6)


def test_swav_matches_numpy_multicrop_and_queue():
  rng = np.random.default_rng(2)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  protos = unit(rng.normal(size=(6, 8)))
  scores = [unit(rng.normal(size=(10, 8))) @ protos.T for _ in range(5)]   # 2 global + 3 local
  queue = [unit(rng.normal(size=(20, 8))) @ protos.T for _ in range(2)]
  js = [jnp.asarray(s, jnp.float32) for s in scores]
  loss, _ = losses.swav(js, (0, 1), 0.1, 0.05, 3)
  np.testing.assert_allclose(float(loss), swav_numpy(scores), rtol=1e-5)
  jq = [jnp.asarray(q, jnp.float32) for q in queue]
  loss_q, _ = losses.swav(js, (0, 1), 0.1, 0.05, 3, jq, jnp.asarray(True))
  np.testing.assert_allclose(float(loss_q), swav_numpy(scores, queue=queue), rtol=1e-5)
  assert abs(float(loss_q) - float(loss)) > 1e-4
  loss_off, _ = losses.swav(js, (0, 1), 0.1, 0.05, 3, jq, jnp.asarray(False))
  np.testing.assert_allclose(float(loss_off), float(loss), rtol=1e-6)
