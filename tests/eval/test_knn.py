"""kNN evaluator vs a brute-force numpy implementation of DINO's weighted kNN."""
import numpy as np
import pytest

from ssl_jax.eval import knn


def knn_numpy(train, train_labels, test, k, temperature, num_classes):
  """Wu et al. 2018 / DINO: cosine similarities, top-k neighbours vote exp(s / T)."""
  train = train / np.linalg.norm(train, axis=1, keepdims=True)
  test = test / np.linalg.norm(test, axis=1, keepdims=True)
  preds = []
  for q in test:
    sims = train @ q
    nn_idx = np.argsort(-sims, kind='stable')[:k]
    votes = np.zeros(num_classes)
    for i in nn_idx:
      votes[train_labels[i]] += np.exp(sims[i] / temperature)
    preds.append(np.argmax(votes))
  return np.asarray(preds)


@pytest.fixture(scope='module')
def data():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(5, 16))
  ytr = rng.integers(0, 5, 300)
  yte = rng.integers(0, 5, 77)
  xtr = centers[ytr] + 1.5 * rng.normal(size=(300, 16))
  xte = centers[yte] + 1.5 * rng.normal(size=(77, 16))
  return xtr.astype(np.float32), ytr, xte.astype(np.float32), yte


@pytest.mark.parametrize('k,temperature', [(1, 0.07), (10, 0.07), (20, 0.5), (200, 0.07)])
def test_knn_matches_bruteforce(data, k, temperature):
  xtr, ytr, xte, yte = data
  want = knn_numpy(xtr, ytr, xte, k, temperature, 5)
  got = knn.knn_predict(xtr, ytr, xte, k=k, temperature=temperature, num_classes=5, chunk=32)
  np.testing.assert_array_equal(got, want)
  acc = knn.knn_top1(xtr, ytr, xte, yte, k=k, temperature=temperature, num_classes=5)
  assert acc == pytest.approx(np.mean(want == yte))
  assert 0.4 < acc < 1.0   # separable-ish clusters: far above chance (0.2), not trivial


def test_knn_k_larger_than_bank_and_scale_invariance(data):
  xtr, ytr, xte, _ = data
  got = knn.knn_predict(xtr[:7], ytr[:7], xte, k=20, num_classes=5)
  np.testing.assert_array_equal(got, knn_numpy(xtr[:7], ytr[:7], xte, 7, 0.07, 5))
  scaled = knn.knn_predict(3.0 * xtr, ytr, 0.1 * xte, k=10, num_classes=5)
  np.testing.assert_array_equal(scaled, knn.knn_predict(xtr, ytr, xte, k=10, num_classes=5))
