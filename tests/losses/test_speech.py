"""losses.speech: wav2vec 2.0's contrastive / diversity / feature terms and HuBERT's masked
prediction loss against hand-computed values and literal numpy loops over the masked frames."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses
from ssl_jax.data.masking import span_mask

RNG = np.random.default_rng(0)


def _cos(a, b):
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def contrastive_numpy(context, quantized, mask, negatives, kappa):
  """Baevski et al. 2020, Eq. 3, one masked frame at a time: ``negatives[b][t]`` are indices into
  row b's masked frames (time order); a distractor equal to the positive is left out (-inf)."""
  nll, correct = [], []
  for b in range(len(mask)):
    frames = np.flatnonzero(mask[b])
    for t, f in enumerate(frames):
      c, q = context[b, f], quantized[b, f]
      logits = [_cos(c, q) / kappa]
      for j in negatives[b][t]:
        q_neg = quantized[b, frames[j]]
        logits.append(-np.inf if np.array_equal(q_neg, q) else _cos(c, q_neg) / kappa)
      logits = np.array(logits)
      nll.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[0])
      correct.append(np.argmax(logits) == 0)
  return np.mean(nll), np.mean(correct)


def test_hand_value_orthogonal_frames():
  """Context = quantized = e1, e2, e3 at the 3 masked frames: every positive has cosine 1 and
  every distractor (always another frame) cosine 0, whichever are drawn:
  L = -log e^{1/k} / (e^{1/k} + 2 e^0) = log(1 + 2 e^{-1/k})."""
  x = np.zeros((1, 5, 3), np.float32)
  for t, f in enumerate([0, 2, 3]):
    x[0, f, t] = 1.0
  mask = jnp.array([[True, False, True, True, False]])
  for kappa in (0.5, 0.1):
    loss, metrics = losses.wav2vec2_contrastive_loss(x, x, mask, jax.random.PRNGKey(0),
                                                     num_negatives=2, temperature=kappa)
    # float32 log-softmax near 10 resolves ~1e-6, a large part of 9.08e-5 at kappa = 0.1.
    np.testing.assert_allclose(float(loss), math.log(1 + 2 * math.exp(-1 / kappa)), rtol=1e-5,
                               atol=1e-6)
    assert float(metrics['accuracy']) == 1.0 and float(metrics['num_masked']) == 3.0


@pytest.mark.parametrize('num_masked', [None, 3])
def test_contrastive_matches_numpy_loop(num_masked):
  """1 utterance, 3 masked frames of 6, 2 distractors: the loss equals the numpy loop over the
  distractors that ``sample_negatives`` draws from the same key."""
  context = RNG.normal(size=(1, 6, 4)).astype(np.float32)
  quantized = RNG.normal(size=(1, 6, 4)).astype(np.float32)
  mask = np.array([[False, True, True, False, True, False]])
  key = jax.random.PRNGKey(7)
  loss, metrics = losses.wav2vec2_contrastive_loss(
      context, quantized, jnp.asarray(mask), key, num_negatives=2, num_masked=num_masked)
  if num_masked is None:   # the sampler runs over all T rows, each row's count as the range
    idx = losses.sample_negatives(key, 1, 6, 2, num_valid=jnp.array([3]))[:, :3]
  else:
    idx = losses.sample_negatives(key, 1, 3, 2)
  idx = np.asarray(idx)
  assert idx.shape == (1, 3, 2)
  assert np.all((idx >= 0) & (idx < 3)) and np.all(idx != np.arange(3)[None, :, None])
  want, acc = contrastive_numpy(context, quantized, mask, idx, 0.1)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['accuracy']), acc)


def test_contrastive_rows_with_different_counts():
  """Two utterances, 4 and 2 masked frames: each draws from its own masked frames, and the loss
  is the mean over all 6 (fairseq: sum / sample_size)."""
  context = RNG.normal(size=(2, 7, 5)).astype(np.float32)
  quantized = RNG.normal(size=(2, 7, 5)).astype(np.float32)
  mask = np.zeros((2, 7), bool)
  mask[0, [0, 3, 4, 6]] = True
  mask[1, [2, 5]] = True
  key = jax.random.PRNGKey(1)
  loss, _ = losses.wav2vec2_contrastive_loss(context, quantized, jnp.asarray(mask), key,
                                             num_negatives=3)
  idx = np.asarray(losses.sample_negatives(key, 2, 7, 3, num_valid=jnp.array([4, 2])))
  assert np.all(idx[1, :2] == 1 - np.arange(2)[:, None])   # one other frame: always that one
  want, _ = contrastive_numpy(context, quantized, mask, [idx[0, :4], idx[1, :2]], 0.1)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_sample_negatives_uniform_over_other_frames():
  idx = np.asarray(losses.sample_negatives(jax.random.PRNGKey(0), 2, 5, 4000))
  for t in range(5):
    counts = np.bincount(idx[:, t].ravel(), minlength=5)
    assert counts[t] == 0
    others = np.delete(counts, t)
    np.testing.assert_allclose(others / others.sum(), 0.25, atol=0.02)


def test_identical_distractors_get_minus_inf_and_finite_gradient():
  """Masked frames 0 and 2 share one quantised vector (as two frames with the same codes do):
  a drawn copy of the positive scores -inf, all else stays finite, and so do the gradients."""
  context = RNG.normal(size=(1, 4, 3)).astype(np.float32)
  quantized = RNG.normal(size=(1, 4, 3)).astype(np.float32)
  quantized[0, 2] = quantized[0, 0]
  mask = jnp.ones((1, 4), bool)
  key = jax.random.PRNGKey(0)
  logits, valid, idx = losses.wav2vec2_contrastive_logits(context, quantized, mask, key,
                                                          num_negatives=20)
  logits, idx = np.asarray(logits)[0], np.asarray(idx)[0]
  copy = ((np.arange(4)[:, None] == 0) & (idx == 2)) | ((np.arange(4)[:, None] == 2) & (idx == 0))
  assert copy.any() and np.all(valid)
  assert np.all(np.isneginf(logits[:, 1:][copy])) and np.all(np.isfinite(logits[:, 1:][~copy]))
  np.testing.assert_allclose(logits[1, 0], _cos(context[0, 1], quantized[0, 1]) / 0.1, rtol=1e-5)
  want, _ = contrastive_numpy(context, quantized, np.ones((1, 4), bool), idx[None], 0.1)
  loss_fn = lambda c, q: losses.wav2vec2_contrastive_loss(c, q, mask, key, num_negatives=20)[0]
  np.testing.assert_allclose(float(loss_fn(context, quantized)), want, rtol=1e-5)
  grads = jax.grad(loss_fn, argnums=(0, 1))(jnp.asarray(context), jnp.asarray(quantized))
  assert all(np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).max() > 0
             for g in grads)


def test_copies_are_found_by_fingerprint_exactly():
  """Copies of the positive are found through a 64-bit hash of the bits: equal vectors (and
  -0.0 vs 0.0, equal under ==) always match; near or structured differences do not."""
  from ssl_jax.losses.speech import _fingerprint
  v = RNG.normal(size=16).astype(np.float32)
  flips = v.copy()
  flips[[2, 9]] *= -1                                   # two sign bits: a linear hash's blind spot
  ulp = v.copy()
  ulp[5] = np.nextafter(ulp[5], np.float32(np.inf))
  zero, neg_zero = v.copy(), v.copy()
  zero[0], neg_zero[0] = 0.0, -0.0
  fp = np.asarray(_fingerprint(jnp.asarray(np.stack([v, v.copy(), flips, ulp, v[::-1], zero,
                                                     neg_zero]))))
  assert (fp[0] == fp[1]).all() and (fp[5] == fp[6]).all()
  assert all((fp[0] != fp[i]).any() for i in (2, 3, 4, 5))
  # No collisions among 20,000 distinct quantiser-like vectors (sums of two codebook entries).
  book = RNG.normal(size=(2, 160, 8)).astype(np.float32)
  q = (book[0][:, None, :] + book[1][None, :125, :]).reshape(-1, 8)
  assert len(np.unique(np.asarray(_fingerprint(jnp.asarray(q))), axis=0)) == len(q)


def test_cross_sample_negatives_come_from_other_masked_frames():
  b, t, k = 3, 12, 50
  mask = span_mask(jax.random.PRNGKey(0), b, t, 0.65, 3, equalize=False)
  x = jax.random.normal(jax.random.PRNGKey(1), (b, t, 4))
  logits, valid, idx = losses.wav2vec2_contrastive_logits(
      x, x, mask, jax.random.PRNGKey(2), num_negatives=4, cross_sample_negatives=k)
  assert logits.shape == (b, t, 1 + 4 + k)
  valid, cross = np.asarray(valid), np.asarray(idx)[..., 4:]
  flat_valid = valid.reshape(-1)
  own = np.arange(b * t).reshape(b, t)
  # Every cross-sample distractor of a real anchor is a masked frame other than the anchor, and
  # some come from other utterances.
  assert np.all(flat_valid[cross[valid]])
  assert np.all(cross[valid] != own[valid][:, None])
  assert np.any(cross[valid] // t != np.nonzero(valid)[0][:, None])
  loss, _ = losses.wav2vec2_contrastive_loss(x, x, mask, jax.random.PRNGKey(2), num_negatives=4,
                                             cross_sample_negatives=k)
  assert np.isfinite(float(loss))


def test_contrastive_jit_with_span_mask():
  """The whole objective under jit with a traced mask and static shapes."""
  @jax.jit
  def step(key, context, quantized):
    k_mask, k_neg = jax.random.split(key)
    mask = span_mask(k_mask, 4, 49, 0.65, 10)
    return losses.wav2vec2_contrastive_loss(context, quantized, mask, k_neg)

  context = jax.random.normal(jax.random.PRNGKey(0), (4, 49, 8))
  loss, metrics = step(jax.random.PRNGKey(1), context, context)
  # Context = target: every positive has cosine 1, so it wins and the loss is small.
  assert float(metrics['accuracy']) == 1.0 and float(loss) < 1.0
  assert float(metrics['num_masked']) % 4 == 0   # equal counts per row


def test_diversity_loss_and_feature_penalty():
  g, v = 2, 320
  assert float(losses.wav2vec2_diversity_loss(g * v, g * v)) == 0.0        # uniform use
  np.testing.assert_allclose(float(losses.wav2vec2_diversity_loss(g, g * v)),
                             (g * v - g) / (g * v))                        # collapsed: 0.996875
  np.testing.assert_allclose(float(losses.feature_l2_penalty(jnp.array([[1., 2.], [3., 4.]]))),
                             7.5)


def test_hubert_logits_and_loss_match_numpy():
  frames = RNG.normal(size=(2, 5, 6)).astype(np.float32)
  emb = RNG.normal(size=(7, 6)).astype(np.float32)
  labels = RNG.integers(0, 7, size=(2, 5))
  mask = np.array([[1, 1, 0, 0, 1], [0, 1, 1, 0, 0]], bool)
  logits = np.asarray(losses.hubert_logits(frames, emb, 0.1))
  want = np.array([[[_cos(frames[b, t], e) / 0.1 for e in emb] for t in range(5)]
                   for b in range(2)])
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
  log_p = want - np.log(np.exp(want).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]
  loss, metrics = losses.hubert_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))
  np.testing.assert_allclose(float(loss), nll[mask].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics['loss_unmasked']), nll[~mask].mean(), rtol=1e-5)
  acc = (want.argmax(-1) == labels)
  np.testing.assert_allclose(float(metrics['correct_masked']), acc[mask].mean())
  np.testing.assert_allclose(float(metrics['correct_unmasked']), acc[~mask].mean())
  # fairseq's criterion: (w_m * sum_m + w_u * sum_u) / (N_m + N_u) once w_u > 0.
  both, _ = losses.hubert_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask),
                               unmasked_weight=0.5)
  np.testing.assert_allclose(float(both), (nll[mask].sum() + 0.5 * nll[~mask].sum()) / 10,
                             rtol=1e-5)


def test_hubert_hand_value_and_gradient():
  # Logits (2, 0) with unit 0: -log e^2 / (e^2 + 1) = log(1 + e^{-2}); the unmasked frame is
  # wrong but carries no weight.
  logits = jnp.array([[[2., 0.], [0., 2.]]])
  loss, metrics = losses.hubert_loss(logits, jnp.array([[0, 0]]), jnp.array([[True, False]]))
  np.testing.assert_allclose(float(loss), math.log(1 + math.exp(-2)), rtol=1e-6)
  assert float(metrics['correct_masked']) == 1.0 and float(metrics['correct_unmasked']) == 0.0
  frames = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 4))
  emb = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
  mask = span_mask(jax.random.PRNGKey(2), 2, 8, 0.65, 2)
  labels = jax.random.randint(jax.random.PRNGKey(3), (2, 8), 0, 5)
  f = lambda fr, e: losses.hubert_loss(losses.hubert_logits(fr, e), labels, mask)[0]
  grads = jax.grad(f, argnums=(0, 1))(frames, emb)
  assert all(np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).max() > 0
             for g in grads)
  # Unmasked frames get no gradient at the default weights.
  g_frames = np.asarray(grads[0])
  assert np.all(g_frames[~np.asarray(mask)] == 0)
