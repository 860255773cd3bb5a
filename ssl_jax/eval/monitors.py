"""Label-free monitors: is a run learning, without labels? (issue 31)

Pure numpy functions of an embedding matrix (N, D), plus ``monitor_features``: the frozen
features of a fixed subset of the training images under two deterministic views, computed by the
eval path's feature function (the same compiled function as kNN: no extra training-step cost).

* RankMe (Garrido et al. 2023, "RankMe: Assessing the downstream performance of pretrained
  self-supervised representations by their rank"): with singular values s_k of Z,
  p_k = s_k / ||s||_1 + eps, RankMe(Z) = exp(-sum_k p_k log p_k). 1 for a rank-1 (collapsed)
  embedding, close to min(N, D) for an isotropic one; higher tracks better downstream accuracy.
* Embedding std (the collapse detector of Chen & He 2021, SimSiam Sec. 4.1): the mean over
  dimensions of the per-dimension std of the l2-normalised embeddings. ~1/sqrt(D) for a healthy
  (spread over the sphere) embedding, ~0 when every image maps to one point. Reported as
  ``embedding_std`` and as ``embedding_std_ratio`` = std x sqrt(D) (~1 healthy, ~0 collapsed).
* Alignment and uniformity (Wang & Isola 2020, "Understanding contrastive representation learning
  through alignment and uniformity on the hypersphere"), on l2-normalised f:
  align = E ||f(x) - f(x')||^2 over positive pairs (two views; lower is better, 0 = invariant),
  uniform = log E exp(-2 ||f(x) - f(y)||^2) over all pairs (lower is better; -4 ... 0, 0 when
  every embedding is the same point).
"""
from __future__ import annotations

import numpy as np

from ssl_jax.eval import features as features_lib

# A run is called collapsed (a warning is logged) when its embeddings' std is below this fraction
# of a healthy 1/sqrt(D) (complete collapse), or RankMe is below COLLAPSE_RANK (all images on a
# line or plane: dimensional collapse).
COLLAPSE_STD_RATIO = 0.1
COLLAPSE_RANK = 2.0
MONITOR_IMAGES = 512          # the fixed training subset the monitors embed
SECOND_VIEW_CROP = 0.75       # the second view: a centred crop of this side fraction, mirrored


def l2_normalize(z) -> np.ndarray:
  z = np.asarray(z, np.float64)
  return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)


def rankme(z, eps: float = 1e-7) -> float:
  """RankMe (Garrido et al. 2023) of embeddings (N, D): exp of the entropy of the l1-normalised
  singular values; in [1, min(N, D)]."""
  s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
  p = s / max(float(np.sum(s)), 1e-12) + eps
  return float(np.exp(-np.sum(p * np.log(p))))


def embedding_std(z) -> float:
  """Mean per-dimension std of the l2-normalised embeddings (SimSiam's collapse check)."""
  return float(np.mean(np.std(l2_normalize(z), axis=0)))


def alignment(z1, z2, alpha: float = 2.0) -> float:
  """Wang & Isola's alignment E ||f(x) - f(x')||^alpha of positive pairs (rows of z1, z2)."""
  d = np.linalg.norm(l2_normalize(z1) - l2_normalize(z2), axis=-1)
  return float(np.mean(d ** alpha))


def uniformity(z, t: float = 2.0) -> float:
  """Wang & Isola's uniformity log E_{i<j} exp(-t ||f(x_i) - f(x_j)||^2)."""
  f = l2_normalize(z)
  sq = np.maximum(2.0 - 2.0 * f @ f.T, 0.0)   # ||a - b||^2 of unit vectors
  iu = np.triu_indices(len(f), k=1)
  v = -t * sq[iu]
  m = np.max(v)
  return float(m + np.log(np.mean(np.exp(v - m))))


def label_free_metrics(z1, z2=None) -> dict:
  """{rankme, embedding_std, embedding_std_ratio[, alignment, uniformity]} of view-1 embeddings
  z1 (N, D) and, when given, their second views z2 (N, D)."""
  z1 = np.asarray(z1, np.float64)
  std = embedding_std(z1)
  out = {'rankme': rankme(z1), 'embedding_std': std,
         'embedding_std_ratio': std * np.sqrt(z1.shape[1])}
  if z2 is not None:
    out['alignment'] = alignment(z1, z2)
    out['uniformity'] = uniformity(np.concatenate([z1, np.asarray(z2, np.float64)]))
  return out


def collapse_warning(metrics: dict) -> str:
  """'' for a healthy embedding, else one line that names the symptom and what to try."""
  if metrics['embedding_std_ratio'] < COLLAPSE_STD_RATIO:
    what = (f"embedding std {metrics['embedding_std_ratio']:.3f} x 1/sqrt(D) (complete collapse: "
            'every image maps to about the same point)')
  elif metrics['rankme'] < COLLAPSE_RANK:
    what = f"RankMe {metrics['rankme']:.2f} (dimensional collapse: embeddings on a line)"
  else:
    return ''
  return (f'the embeddings look collapsed: {what}; lower optim.lr, lengthen optim.warmup_steps, '
          'or check the method\'s collapse guard (EMA teacher, predictor, centering, variance term)')


class TwoViewSubset:
  """A fixed subset of a source (``MONITOR_IMAGES`` indices drawn with ``seed``) whose records
  are the original image (``second=False``) or its mirror image (``second=True``)."""

  def __init__(self, source, seed: int = 0, n: int = MONITOR_IMAGES, second: bool = False):
    rng = np.random.default_rng(seed)
    self.source, self.second = source, second
    self.indices = np.sort(rng.permutation(len(source))[:min(n, len(source))])
    self.num_classes = getattr(source, 'num_classes', 0)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i):
    rec = dict(self.source[int(self.indices[int(i)])])
    if self.second and 'image' in rec:
      rec['image'] = np.ascontiguousarray(rec['image'][:, ::-1])
    elif self.second and 'audio' in rec:   # the waveform 0.1 of its length later, zero-filled
      wave = np.asarray(rec['audio'], np.float32)
      shift = len(wave) // 10
      rec['audio'] = np.concatenate([wave[shift:], np.zeros(shift, np.float32)])
    return rec


def monitor_features(feature_fn, params, buffers, source, *, mesh, image_size: int,
                     batch_size: int, crop_frac: float = 1.0, seed: int = 0, view=None):
  """(z1, z2): features of the monitor subset of ``source``: view 1 the eval path's centre crop,
  view 2 a mirrored, tighter centre crop (SECOND_VIEW_CROP of it). Audio (``view``: the
  modality's eval view): view 2 is the waveform shifted by a tenth of its length."""
  kw = dict(mesh=mesh, image_size=image_size, batch_size=batch_size, view=view)
  z1, _ = features_lib.extract_features(feature_fn, params, buffers,
                                        TwoViewSubset(source, seed), crop_frac=crop_frac, **kw)
  z2, _ = features_lib.extract_features(feature_fn, params, buffers,
                                        TwoViewSubset(source, seed, second=True),
                                        crop_frac=crop_frac * SECOND_VIEW_CROP, **kw)
  return z1, z2
