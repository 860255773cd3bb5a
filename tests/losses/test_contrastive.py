"""losses.contrastive: every loss of the family against a hand-computed value and a literal numpy
transcription of its paper formula. Moved from the method tests (methods/test_cmc.py,
methods/test_cpc.py, methods/test_instdis.py, methods/test_moco.py, methods/test_mocov3.py,
methods/test_nnclr.py, methods/test_pretext.py, test_losses_simclr.py), which keep the methods'
train steps."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses


def _xent(v, bank, i, tau):
  logits = bank @ v / tau
  return -(logits[i] - math.log(np.exp(logits).sum()))


def cmc_numpy(feats, banks, index, tau, pairs):
  """Tian et al. 2020: sum over contrasted pairs (a, b) of L^{a,b} + L^{b,a}, where L^{a,b} is the
  batch mean of -log softmax_j(z^a_i . M^b_j / tau) at j = i."""
  feats = [np.asarray(f, np.float64) for f in feats]
  banks = [np.asarray(m, np.float64) for m in banks]
  total = 0.0
  for a, b in pairs:
    for x, y in ((a, b), (b, a)):
      total += np.mean([_xent(feats[x][r], banks[y], index[r], tau) for r in range(len(index))])
  return total


def _unit(rng, shape):
  x = rng.normal(size=shape)
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def cpc_numpy(preds, targets, steps):
  """-log softmax of every in-grid prediction against all B*H*W latents, averaged."""
  targets = np.asarray(targets, np.float64)
  b, h, w, _ = targets.shape
  flat = targets.reshape(b * h * w, -1)
  nll = []
  for p, k in zip(preds, steps):
    p = np.asarray(p, np.float64)
    for n in range(b):
      for i in range(h - k):
        for j in range(w):
          logits = flat @ p[n, i, j]
          pos = logits[n * h * w + (i + k) * w + j]
          nll.append(math.log(np.exp(logits).sum()) - pos)
  return sum(nll) / len(nll)


def instdis_numpy(v, bank, index, tau):
  """Wu et al. 2018 Eq. (2): -log exp(v_i.v / tau) / sum_j exp(v_j.v / tau), averaged."""
  v, bank = np.asarray(v, np.float64), np.asarray(bank, np.float64)
  total = 0.0
  for b in range(len(v)):
    logits = [bank[j] @ v[b] / tau for j in range(len(bank))]
    total -= logits[index[b]] - math.log(sum(math.exp(x) for x in logits))
  return total / len(v)


def _numpy_info_nce_queue(q, k, queue, tau):
  """He et al. 2020 Eq. 1, one query at a time."""
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  q, k, queue = unit(q), unit(k), unit(queue)
  out = []
  for i in range(len(q)):
    pos = np.exp(q[i] @ k[i] / tau)
    neg = sum(np.exp(q[i] @ queue[j] / tau) for j in range(len(queue)))
    out.append(-np.log(pos / (pos + neg)))
  return np.mean(out)


def _numpy_ctr(q, k, tau):
  """Chen et al. 2021 Alg. 1: CrossEntropy(q k^T / tau, arange(N)) * 2 tau."""
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  q, k = unit(q), unit(k)
  logits = q @ k.T / tau
  ce = [-(logits[i, i] - np.log(np.exp(logits[i]).sum())) for i in range(len(q))]
  return np.mean(ce) * 2 * tau


def _numpy_nnclr(z1, z2, p1, p2, support, tau):
  """Dwibedi et al. 2021 Eq. 2 (NN by Euclidean distance of unit vectors, Eq. 3), symmetrised."""
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  s = unit(support)

  def one(z, p):
    z, p = unit(z), unit(p)
    total = 0.0
    for i in range(len(z)):
      nn = s[np.argmin(np.linalg.norm(s - z[i], axis=-1))]
      total += -np.log(np.exp(nn @ p[i] / tau) / sum(np.exp(nn @ p[k] / tau)
                                                      for k in range(len(p))))
    return total / len(z)
  return (one(z1, p2) + one(z2, p1)) / 2


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


def test_view_pairs():
  assert losses.cmc_view_pairs(2) == [(0, 1)]
  assert losses.cmc_view_pairs(3, 'full') == [(0, 1), (0, 2), (1, 2)]
  assert losses.cmc_view_pairs(3, 'core') == [(0, 1), (0, 2)]
  with pytest.raises(ValueError, match='star'):
    losses.cmc_view_pairs(3, 'star')


def test_two_view_hand_value():
  # z^L = e1 against M^ab rows (e1, e2): -log e/(e + 1); z^ab = e2 against M^L rows (e2, e1) at
  # index 0: -log e/(e + 1) as well.
  z_l, z_ab = jnp.array([[1., 0.]]), jnp.array([[0., 1.]])
  bank_l, bank_ab = jnp.array([[0., 1.], [1., 0.]]), jnp.array([[1., 0.], [0., 1.]])
  loss, acc = losses.cmc_loss([z_l, z_ab], [bank_l, bank_ab], jnp.array([0]), temperature=1.0)
  np.testing.assert_allclose(float(loss), 2 * -math.log(math.e / (math.e + 1)), rtol=1e-6)
  assert float(acc) == 1.0
  # Each view is contrasted with the *other* view's bank: swapping the banks changes the loss.
  swapped, _ = losses.cmc_loss([z_l, z_ab], [bank_ab, bank_l], jnp.array([0]), temperature=1.0)
  np.testing.assert_allclose(float(swapped), 2 * -math.log(1 / (math.e + 1)), rtol=1e-6)


@pytest.mark.parametrize('graph', ['full', 'core'])
def test_three_views_match_numpy(graph):
  rng = np.random.default_rng(0)
  banks = [_unit(rng, (30, 8)) for _ in range(3)]
  feats = [_unit(rng, (5, 8)) for _ in range(3)]
  index = rng.choice(30, 5, replace=False)
  loss, _ = losses.cmc_loss([jnp.asarray(f) for f in feats], [jnp.asarray(b) for b in banks],
                            jnp.asarray(index), 0.07, graph)
  want = cmc_numpy(feats, banks, index, 0.07, losses.cmc_view_pairs(3, graph))
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_cpc_infonce_hand_value():
  # One image, two rows of one patch: z_00 = (1, 0), z_10 = (0, 1); the prediction made at row 0
  # for k = 1 is (1, 0): logits (1, 0), positive z_10 -> -log(e^0 / (e^1 + e^0)).
  targets = jnp.array([[[[1., 0.]], [[0., 1.]]]])
  preds = [jnp.array([[[[1., 0.]], [[5., 5.]]]])]    # row 1 has no target inside the grid
  loss, acc = losses.cpc_infonce(preds, targets, (1,))
  np.testing.assert_allclose(float(loss), math.log(math.e + 1), rtol=1e-6)
  assert float(acc) == 0.0


def test_cpc_infonce_matches_numpy():
  rng = np.random.default_rng(0)
  targets = rng.normal(size=(3, 4, 3, 5)).astype(np.float32)
  preds = [rng.normal(size=(3, 4, 3, 5)).astype(np.float32) for _ in range(2)]
  loss, _ = losses.cpc_infonce([jnp.asarray(p) for p in preds], jnp.asarray(targets), (1, 3))
  np.testing.assert_allclose(float(loss), cpc_numpy(preds, targets, (1, 3)), rtol=1e-5)
  with pytest.raises(ValueError, match='step 4'):
    losses.cpc_infonce([jnp.asarray(preds[0])], jnp.asarray(targets), (4,))


def test_instdis_hand_value():
  bank = jnp.array([[1., 0.], [0., 1.], [0.6, 0.8]])
  v = jnp.array([[1., 0.]])
  loss, acc = losses.instance_discrimination(v, bank, jnp.array([0]), temperature=1.0)
  np.testing.assert_allclose(float(loss), -(1 - math.log(math.e + 1 + math.exp(0.6))), rtol=1e-6)
  assert float(acc) == 1.0


def test_instdis_matches_numpy():
  rng = np.random.default_rng(0)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  bank = unit(rng.normal(size=(40, 8))).astype(np.float32)
  v = unit(rng.normal(size=(6, 8))).astype(np.float32)
  index = rng.choice(40, 6, replace=False)
  loss, _ = losses.instance_discrimination(jnp.asarray(v), jnp.asarray(bank),
                                           jnp.asarray(index), 0.07)
  np.testing.assert_allclose(float(loss), instdis_numpy(v, bank, index, 0.07), rtol=1e-5)


def test_memory_bank_update_hand_values():
  bank = jnp.array([[1., 0.], [0., 1.], [0.6, 0.8]])
  new = losses.memory_bank_update(bank, jnp.array([0]), jnp.array([[0., 1.]]), momentum=0.5)
  r = 1 / math.sqrt(2)
  np.testing.assert_allclose(np.asarray(new), [[r, r], [0, 1], [0.6, 0.8]], rtol=1e-6)
  # An index twice in a batch: the last occurrence wins, deterministically.
  new = losses.memory_bank_update(bank, jnp.array([2, 2]), jnp.array([[1., 0.], [0., 1.]]), 0.5)
  np.testing.assert_allclose(np.asarray(new[2]), np.array([0.3, 0.9]) / math.hypot(0.3, 0.9),
                             rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(new[:2]), np.asarray(bank[:2]))


def test_info_nce_queue_hand_value():
  q = jnp.array([[1.0, 0.0], [0.0, 2.0]])
  k = jnp.array([[3.0, 0.0], [0.6, 0.8]])
  queue = jnp.array([[0.0, 1.0], [-1.0, 0.0]])
  loss, acc = losses.info_nce_queue(q, k, queue, temperature=0.5)
  # query 0: logits (2, 0, -2); query 1: logits (1.6, 2, 0), its positive loses to queue row 0.
  l0 = math.log(1 + math.exp(-2) + math.exp(-4))
  l1 = -1.6 + math.log(math.exp(1.6) + math.exp(2.0) + 1.0)
  np.testing.assert_allclose(loss, (l0 + l1) / 2, rtol=1e-6)
  np.testing.assert_allclose(acc, 0.5)


def test_info_nce_queue_matches_numpy():
  rng = np.random.default_rng(0)
  q, k, queue = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)), rng.normal(size=(12, 5))
  loss, _ = losses.info_nce_queue(jnp.asarray(q), jnp.asarray(k), jnp.asarray(queue), 0.2)
  np.testing.assert_allclose(loss, _numpy_info_nce_queue(q, k, queue, 0.2), rtol=1e-5)


def test_contrastive_hand_value():
  q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  k = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  c = 1 / math.sqrt(2)
  tau = 0.5
  l0 = -2.0 + math.log(math.exp(2.0) + math.exp(2 * c))
  l1 = -2 * c + math.log(1.0 + math.exp(2 * c))
  loss, acc = losses.moco_v3_contrastive(q, k, tau)
  np.testing.assert_allclose(loss, 2 * tau * (l0 + l1) / 2, rtol=1e-6)
  np.testing.assert_allclose(acc, 1.0)


def test_symmetric_matches_numpy():
  rng = np.random.default_rng(4)
  q1, q2, k1, k2 = (rng.normal(size=(8, 6)) for _ in range(4))
  loss, _ = losses.moco_v3_symmetric(*(jnp.asarray(x) for x in (q1, q2, k1, k2)), 0.2)
  ref = _numpy_ctr(q1, k2, 0.2) + _numpy_ctr(q2, k1, 0.2)
  np.testing.assert_allclose(loss, ref, rtol=1e-5)


def test_nearest_neighbour_hand_value():
  z = jnp.array([[1.0, 0.1], [0.0, -1.0]])
  support = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, -2.0]])
  nn, idx = losses.nearest_neighbour(z, support)
  np.testing.assert_array_equal(idx, [0, 2])
  np.testing.assert_allclose(nn, [[1.0, 0.0], [0.0, -1.0]])


def test_nnclr_contrastive_hand_value():
  nn = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  p = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  c = 1 / math.sqrt(2)
  l0 = -1.0 + math.log(math.exp(1.0) + math.exp(c))
  l1 = -c + math.log(1.0 + math.exp(c))
  loss, acc = losses.nnclr_contrastive(nn, p, temperature=1.0)
  np.testing.assert_allclose(loss, (l0 + l1) / 2, rtol=1e-6)
  np.testing.assert_allclose(acc, 1.0)


def test_nnclr_symmetric_matches_numpy():
  rng = np.random.default_rng(3)
  z1, z2, p1, p2 = (rng.normal(size=(6, 5)) for _ in range(4))
  support = rng.normal(size=(20, 5))
  loss, _ = losses.nnclr_symmetric(*(jnp.asarray(x) for x in (z1, z2, p1, p2, support)), 0.1)
  np.testing.assert_allclose(loss, _numpy_nnclr(z1, z2, p1, p2, support, 0.1), rtol=1e-5)


def test_memory_bank_info_nce_hand_and_numpy():
  q = jnp.array([[1.0, 0.0]])
  pos = jnp.array([[1.0, 0.0]])
  neg = jnp.array([[0.0, 1.0], [-1.0, 0.0]])
  loss, acc = losses.memory_bank_info_nce(q, pos, neg, temperature=0.5)
  # similarities 1, 0, -1 -> -log(e^2 / (e^2 + 1 + e^-2))
  np.testing.assert_allclose(loss, np.log(1 + np.exp(-2.0) + np.exp(-4.0)), rtol=1e-6)
  assert float(acc) == 1.0
  rng = np.random.default_rng(0)
  q, p, n = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)), rng.normal(size=(9, 4))
  nz = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  ref = []
  for i in range(6):
    s = np.concatenate([[nz(q)[i] @ nz(p)[i]], nz(n) @ nz(q)[i]]) / 0.2
    ref.append(-s[0] + np.log(np.exp(s).sum()))
  np.testing.assert_allclose(losses.memory_bank_info_nce(jnp.asarray(q), jnp.asarray(p),
                                                         jnp.asarray(n), 0.2)[0],
                             np.mean(ref), rtol=1e-5)


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


def test_info_nce_core_hand_value():
  # Row 0: positive logit ln 3 against 0, 0 -> -log(3 / 5); row 1: the positive (label 2) loses to
  # candidate 0, and a -inf candidate (an anchor against itself) contributes nothing.
  logits = jnp.array([[math.log(3.0), 0.0, 0.0], [1.0, -jnp.inf, 0.0]])
  loss, acc = losses.info_nce(logits, jnp.array([0, 2]))
  want = (-math.log(3 / 5) - math.log(1 / (math.e + 1))) / 2
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)
  assert float(acc) == 0.5
  nll, correct = losses.info_nce_terms(logits, jnp.array([0, 2]))
  np.testing.assert_allclose(np.asarray(nll), [-math.log(3 / 5), -math.log(1 / (math.e + 1))],
                             rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(correct), [True, False])


def test_queue_and_memory_bank_losses_are_one_function():
  # MoCo's queue InfoNCE and PIRL's memory-bank InfoNCE are the same objective (positive first,
  # shared negatives) with different sources of negatives.
  rng = np.random.default_rng(3)
  q, k, neg = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((6, 5), (6, 5), (9, 5)))
  a = losses.info_nce_queue(q, k, neg, 0.2)
  b = losses.memory_bank_info_nce(q, k, neg, 0.2)
  np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
  np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))


def test_every_family_name_is_re_exported():
  """``losses.<name>`` is the family module's own function for every public name."""
  import inspect  # pylint: disable=g-import-not-at-top
  families = ('common', 'contrastive', 'regression', 'redundancy', 'clustering', 'distillation',
              'masked', 'pretext', 'hybrid')
  for family in families:
    module = getattr(losses, family)
    for name, obj in vars(module).items():
      own = getattr(obj, '__module__', module.__name__) == module.__name__
      if name.startswith('_') or inspect.ismodule(obj) or not own:
        continue
      assert getattr(losses, name, None) is obj, f'losses.{name} is not losses.{family}.{name}'
