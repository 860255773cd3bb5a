"""Weighted k-nearest-neighbour classification on frozen features (DINO's protocol).

Wu et al. 2018 ("Unsupervised Feature Learning via Non-Parametric Instance Discrimination") and
Caron et al. 2021 (DINO), Sec. 4.1: features are L2-normalised; each test feature takes its k most
cosine-similar training features, each votes for its label with weight exp(s / T); the class with
the largest summed weight wins. Queries are processed in fixed-size chunks in one jitted function,
so memory is O(chunk x N_train) and only one compile happens.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.eval import features as features_lib


@functools.partial(jax.jit, static_argnames=('k', 'num_classes'))
def _knn_chunk(train_feats, train_labels, queries, *, k: int, temperature: float,
               num_classes: int):
  sims = queries @ train_feats.T                        # (q, N)
  top_sims, top_idx = jax.lax.top_k(sims, k)            # (q, k)
  weights = jnp.exp(top_sims / temperature)
  votes = jax.nn.one_hot(train_labels[top_idx], num_classes) * weights[..., None]
  return jnp.argmax(jnp.sum(votes, axis=1), axis=-1)


def normalize(x):
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def knn_predict(train_feats, train_labels, test_feats, *, k: int = 20, temperature: float = 0.07,
                num_classes: int | None = None, chunk: int = 256) -> np.ndarray:
  """Predicted labels for ``test_feats`` by weighted cosine kNN over ``train_feats``."""
  train_feats = jnp.asarray(normalize(train_feats))
  test = normalize(test_feats)
  train_labels = jnp.asarray(train_labels, jnp.int32)
  num_classes = int(num_classes or int(train_labels.max()) + 1)
  k = min(k, train_feats.shape[0])
  n = test.shape[0]
  pad = (-n) % chunk
  test = np.concatenate([test, np.zeros((pad, test.shape[1]), np.float32)])
  preds = [np.asarray(_knn_chunk(train_feats, train_labels, jnp.asarray(test[i:i + chunk]), k=k,
                                 temperature=temperature, num_classes=num_classes))
           for i in range(0, len(test), chunk)]
  return np.concatenate(preds)[:n]


def knn_top1(train_feats, train_labels, test_feats, test_labels, **kw) -> float:
  """Top-1 accuracy (in [0, 1]) of ``knn_predict``."""
  pred = knn_predict(train_feats, train_labels, test_feats, **kw)
  return float(np.mean(pred == np.asarray(test_labels)))


def knn_eval(feature_fn, params, buffers, config, mesh, ks=None):
  """({k: top-1} for every k in ``ks`` (default: ``eval.knn_k``), the EvalFeatures): the one kNN
  evaluation of a state, used by the trainer's periodic/final kNN and by ``--mode=eval``."""
  feats = features_lib.eval_split_features(feature_fn, params, buffers, config, mesh)
  scores = {k: knn_top1(feats.train_feats, feats.train_labels, feats.test_feats,
                        feats.test_labels, k=k, temperature=config.eval.knn_temperature,
                        num_classes=feats.num_classes)
            for k in (ks or (config.eval.knn_k,))}
  return scores, feats
