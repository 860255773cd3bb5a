"""Image-level anomaly detection on frozen features: a Gaussian density estimator and AUROC, plus
a built-in anomaly set so CutPaste (or any encoder) can be evaluated without MVTec.

* ``GaussianDensity`` (Rippel, Mertens & Merhof, "Modeling the Distribution of Normal Data in
  Pre-Trained Deep Features for Anomaly Detection", ICPR 2020; used by CutPaste, Li et al. 2021,
  Sec. 3.3): fit the mean and the Ledoit-Wolf shrunk covariance of the L2-normalised features of
  normal training images; the anomaly score of x is the Mahalanobis distance
  ``sqrt((f(x) - mu)^T Sigma^-1 (f(x) - mu))``.
* ``auroc``: the area under the ROC curve, computed as the Mann-Whitney statistic
  P(score(anomaly) > score(normal)) + 0.5 P(tie).
* ``builtin_anomaly_set``: the built-in test images (all normal before corruption); half of them get
  one synthetic defect that no training augmentation produces — a scratch (a thin bright line
  across the image), a hole (a disk erased to the background), a blob (a bright filled disk) or a
  noise patch — and are labelled anomalous.
"""
from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf

from ssl_jax.data import sources
from ssl_jax.eval import features as features_lib

DEFECTS = ('scratch', 'hole', 'blob', 'noise')


def _l2n(x):
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class GaussianDensity:
  """Mahalanobis-distance anomaly score under a Gaussian fitted to normal features."""

  def fit(self, feats):
    f = _l2n(feats)
    self.mean = f.mean(axis=0)
    cov = LedoitWolf().fit(f).covariance_
    self.precision = np.linalg.inv(cov)
    return self

  def score(self, feats):
    d = _l2n(feats) - self.mean
    return np.sqrt(np.maximum(np.einsum('nd,de,ne->n', d, self.precision, d), 0.0))


def auroc(scores, is_anomaly) -> float:
  """AUROC of ``scores`` (higher = more anomalous) for binary labels, via average ranks (ties
  count one half)."""
  scores = np.asarray(scores, np.float64)
  y = np.asarray(is_anomaly, bool)
  n_pos, n_neg = int(y.sum()), int((~y).sum())
  if n_pos == 0 or n_neg == 0:
    raise ValueError('AUROC needs both normal and anomalous examples')
  order = np.argsort(scores, kind='mergesort')
  ranks = np.empty(len(scores), np.float64)
  sorted_scores = scores[order]
  # average rank (1-based) within ties
  _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
  avg = first + (counts + 1) / 2.0
  ranks[order] = np.repeat(avg, counts)
  return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# -- synthetic defects (numpy, on uint8 HWC images) -----------------------------------------------

def _grid(h, w):
  return np.mgrid[0:h, 0:w].astype(np.float64) + 0.5


def add_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
  """``image`` (H, W, 3) uint8 with one synthetic defect of ``kind`` (see ``DEFECTS``)."""
  img = image.astype(np.float64).copy()
  h, w = img.shape[:2]
  side = min(h, w)
  yy, xx = _grid(h, w)
  if kind == 'scratch':
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    half = rng.uniform(0.3, 0.45) * side
    dy, dx = np.sin(angle), np.cos(angle)
    t = np.clip((yy - cy) * dy + (xx - cx) * dx, -half, half)
    dist = np.hypot(yy - (cy + t * dy), xx - (cx + t * dx))
    mask = dist < rng.uniform(0.5, 1.0) * side / 28
    img[mask] = rng.uniform(180, 255)
  elif kind == 'hole':
    ink = np.argwhere(img.mean(-1) > 100)
    cy, cx = (ink[rng.integers(len(ink))] + 0.5) if len(ink) else (h / 2, w / 2)
    mask = np.hypot(yy - cy, xx - cx) < rng.uniform(0.15, 0.22) * side
    img[mask] = 0.0
  elif kind == 'blob':
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    mask = np.hypot(yy - cy, xx - cx) < rng.uniform(0.08, 0.14) * side
    img[mask] = rng.uniform(180, 255)
  elif kind == 'noise':
    s = int(round(rng.uniform(0.25, 0.35) * side))
    y0, x0 = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
    img[y0:y0 + s, x0:x0 + s] = rng.uniform(0, 255, (s, s, 1))
  else:
    raise ValueError(f'unknown defect {kind!r}; choose one of {DEFECTS}')
  return np.clip(np.round(img), 0, 255).astype(np.uint8)


def builtin_anomaly_set(data_cfg, split: str = 'test', seed: int = 0):
  """(images uint8 (N, H, W, 3), is_anomaly (N,) bool, defect name per image ('' if normal)).

  Every other image of the built-in ``split`` gets a defect, cycling through ``DEFECTS``.
  """
  src = sources.get_source(data_cfg, split)
  rng = np.random.default_rng(seed)
  images, anomalous, kinds = [], [], []
  for i in range(len(src)):
    img = src[i]['image']
    kind = DEFECTS[(i // 2) % len(DEFECTS)] if i % 2 else ''
    images.append(add_defect(img, kind, rng) if kind else img)
    anomalous.append(bool(kind))
    kinds.append(kind)
  return np.stack(images), np.asarray(anomalous), np.asarray(kinds)


def evaluate(exp, state, anomaly_set=None) -> dict:
  """Image-level AUROC (overall and per defect) of ``exp.method``'s frozen features in ``state``:
  the Gaussian is fitted on the normal ``eval_train_split`` features of the built-in data."""
  c = exp.config
  kw = dict(mesh=exp.mesh, image_size=c.data.image_size, batch_size=c.eval.batch_size,
            crop_frac=c.data.eval_crop_frac)
  train_src = sources.get_source(c.data, c.data.eval_train_split)
  f_train, _ = features_lib.extract_features(exp.feature_fn, state.params, state.buffers,
                                             train_src, **kw)
  images, is_anom, kinds = anomaly_set if anomaly_set is not None else builtin_anomaly_set(c.data)
  test_src = sources.ArraySource(images, np.zeros(len(images), np.int32), 1, 'anomaly_set')
  f_test, _ = features_lib.extract_features(exp.feature_fn, state.params, state.buffers,
                                            test_src, **kw)
  scores = GaussianDensity().fit(f_train).score(f_test)
  out = {'auroc': auroc(scores, is_anom)}
  for kind in DEFECTS:
    sel = (kinds == kind) | ~is_anom
    out[f'auroc_{kind}'] = auroc(scores[sel], is_anom[sel])
  return out
