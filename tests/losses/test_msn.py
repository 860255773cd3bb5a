"""losses.msn: MSN / PMSN pieces against hand values and a literal numpy transcription of the
official loss (prototype softmax, sharpening, ME-MAX, the power-law prior, Sinkhorn targets)."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax import losses
from tests.losses.test_clustering import sinkhorn_numpy


def softmax(x):
  x = x - x.max(-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(-1, keepdims=True)


def normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def msn_numpy(anchors, targets, protos, tau=0.1, T=0.25, reg_weight=1.0, prior=None,
              ent_weight=0.0, sinkhorn=False):
  """The official init_msn_loss transcribed (float64)."""
  a, t, c = (normalize(np.asarray(v, np.float64)) for v in (anchors, targets, protos))
  probs = softmax(a @ c.T / tau)
  tp = softmax(t @ c.T / tau) ** (1.0 / T)
  tp /= tp.sum(1, keepdims=True)
  if sinkhorn:
    tp = sinkhorn_numpy(np.log(tp), epsilon=1.0)
  tp = np.concatenate([tp] * (len(a) // len(t)))
  ce = np.mean(np.sum(-tp * np.log(probs), 1))
  avg = probs.mean(0)
  if prior is None:
    reg = np.sum(avg * np.log(avg)) + math.log(len(avg))
  else:
    reg = np.sum(prior * (np.log(prior) - np.log(avg)))
  ent = np.mean(np.sum(-probs * np.log(probs), 1))
  return ce + reg_weight * reg + ent_weight * ent


def test_sharpen_is_softmax_at_the_product_temperature():
  z = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
  c = jax.random.normal(jax.random.PRNGKey(1), (7, 4))
  p = losses.prototype_probabilities(z, c, 0.1)
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(losses.sharpen(p, 0.25), losses.prototype_probabilities(z, c, 0.025),
                             rtol=1e-4, atol=1e-7)
  # Hand case: p = (0.5, 0.25, 0.25) at T = 0.5 -> (0.25, 1/16, 1/16) / 0.375.
  np.testing.assert_allclose(losses.sharpen(jnp.array([[0.5, 0.25, 0.25]]), 0.5),
                             [[2 / 3, 1 / 6, 1 / 6]], rtol=1e-6)


def test_memax_and_power_law_prior_hand_values():
  k = 4
  np.testing.assert_allclose(losses.msn_regularizer(jnp.full((k,), 0.25)), 0.0, atol=1e-6)
  onehot = jnp.array([1.0, 0.0, 0.0, 0.0])
  np.testing.assert_allclose(losses.msn_regularizer(onehot), math.log(k), rtol=1e-6)
  p = jnp.array([0.4, 0.3, 0.2, 0.1])
  np.testing.assert_allclose(losses.msn_regularizer(p),
                             math.log(4) + sum(v * math.log(v) for v in (0.4, 0.3, 0.2, 0.1)),
                             rtol=1e-5)
  prior = losses.power_law_prior(k, 0.25)
  want = np.arange(1, 5) ** -0.25
  np.testing.assert_allclose(prior, want / want.sum(), rtol=1e-6)
  assert np.all(np.diff(np.asarray(prior)) < 0)
  np.testing.assert_allclose(losses.msn_regularizer(prior, prior), 0.0, atol=1e-6)
  # KL(prior || p), PMSN's direction: a uniform mean prediction is penalised, less than a collapse.
  kl_u = float(losses.msn_regularizer(jnp.full((k,), 0.25), prior))
  np.testing.assert_allclose(kl_u, np.sum(prior * (np.log(prior) - np.log(0.25))), rtol=1e-5)
  assert 0 < kl_u < float(losses.msn_regularizer(jnp.array([0.97, 0.01, 0.01, 0.01]), prior))


def test_msn_loss_matches_official_formula():
  anchors = jax.random.normal(jax.random.PRNGKey(2), (3 * 4, 6))   # 3 views of a batch of 4
  targets = jax.random.normal(jax.random.PRNGKey(3), (4, 6))
  protos = jax.random.normal(jax.random.PRNGKey(4), (8, 6))
  prior = np.asarray(losses.power_law_prior(8, 0.25), np.float64)
  cases = [dict(), dict(prior=prior), dict(ent_weight=0.3, reg_weight=0.5),
           dict(sinkhorn=True)]
  for kw in cases:
    loss, aux = losses.msn_loss(
        anchors, targets, protos, reg_weight=kw.get('reg_weight', 1.0),
        prior=None if 'prior' not in kw else jnp.asarray(prior, jnp.float32),
        entropy_weight=kw.get('ent_weight', 0.0),
        sinkhorn_iterations=3 if kw.get('sinkhorn') else 0)
    np.testing.assert_allclose(loss, msn_numpy(anchors, targets, protos, **kw), rtol=1e-4,
                               err_msg=str(kw))
  assert 0 < float(aux['target_max']) <= 1


def test_targets_carry_no_gradient_and_anchors_do():
  anchors = jax.random.normal(jax.random.PRNGKey(5), (8, 6))
  targets = jax.random.normal(jax.random.PRNGKey(6), (4, 6))
  protos = jax.random.normal(jax.random.PRNGKey(7), (8, 6))
  g_t = jax.grad(lambda t: losses.msn_loss(anchors, t, protos)[0])(targets)
  g_a = jax.grad(lambda a: losses.msn_loss(a, targets, protos)[0])(anchors)
  assert float(jnp.abs(g_t).max()) == 0.0 and float(jnp.abs(g_a).max()) > 0
