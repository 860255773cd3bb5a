"""k-means units for HuBERT targets, and the unit-quality measures of the HuBERT paper.

Hsu et al., "HuBERT: Self-Supervised Speech Representation Learning by Masked Prediction of
Hidden Units", IEEE/ACM TASLP 2021: the first iteration's targets are k-means (k =
100) clusters of 39-dim MFCCs (13 coefficients + deltas + delta-deltas), later iterations cluster
a transformer layer's features (k = 500). fairseq's recipe (examples/hubert/simple_kmeans/
learn_kmeans.py, dump_km_label.py) fits sklearn's ``MiniBatchKMeans`` (k-means++ init,
``batch_size=10000``, ``max_iter=100``, ``n_init=20``) and labels each frame with the nearest
centroid. Here the same pieces, reproducible from (data, k, seed): greedy k-means++ seeding on a
seeded ``np.random.Generator``, then full-batch Lloyd iterations (or mini-batch updates, Sculley
2010, with ``batch_size``) compiled with ``jax.jit`` over fixed-size chunks of frames.

:func:`pnmi`, :func:`phone_purity` and :func:`cluster_purity` are the paper's measures
of how well units match frame-level phone labels.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

_CHUNK = 2048   # frames per distance block: a (k, chunk) block stays in cache


def _argmin_rows(d):
  """(min, argmin) over axis 0 of a (k, n) block, first index on ties. For k <= 128 a chain of
  elementwise selects, which XLA:CPU fuses into one pass (~2x faster than its variadic argmin
  reduce on the 2-core test machine); above that the chain's compile time grows, so the builtin."""
  if d.shape[0] > 128:
    idx = jnp.argmin(d, axis=0).astype(jnp.int32)
    return jnp.take_along_axis(d, idx[None], axis=0)[0], idx
  best, idx = d[0], jnp.zeros(d.shape[1:], jnp.int32)
  for j in range(1, d.shape[0]):
    better = d[j] < best
    best, idx = jnp.where(better, d[j], best), jnp.where(better, j, idx)
  return best, idx


def _chunked(x, chunk: int):
  """(N, D) -> (C, chunk, D) zero-padded, and (C, chunk) weights 1 on real rows, 0 on padding."""
  n = x.shape[0]
  pad = -n % chunk
  x = jnp.concatenate([x, jnp.zeros((pad, x.shape[1]), x.dtype)])
  w = (jnp.arange(n + pad) < n).astype(jnp.float32)
  return x.reshape(-1, chunk, x.shape[1]), w.reshape(-1, chunk)


def _nearest(xc, c):
  """Nearest centre (int32) and squared distance (clipped at 0) of each row of a (chunk, D)
  block; distances as ||c||^2 - 2 c.x + ||x||^2 with the centres on the major axis."""
  d = jnp.sum(c * c, axis=1)[:, None] - 2.0 * (c @ xc.T)
  best, label = _argmin_rows(d)
  return label, jnp.maximum(best + jnp.sum(xc * xc, axis=1), 0.0)


@functools.partial(jax.jit, static_argnames=('trials',))
def _kmeans_plus_plus(x, first, u, trials: int):
  """Greedy k-means++ given the first index and (k - 1, trials) uniforms."""
  k = u.shape[0] + 1
  n = x.shape[0]
  x_sq = jnp.sum(x * x, axis=1)
  sq_dist = lambda cands: jnp.maximum(
      x_sq[None, :] - 2.0 * (cands @ x.T) + jnp.sum(cands * cands, axis=1)[:, None], 0.0)
  centres = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
  closest = sq_dist(x[first][None])[0]

  def body(i, carry):
    centres, closest = carry
    cum = jnp.cumsum(closest)
    # Points with probability proportional to the squared distance; uniform if all are 0.
    cand = jnp.where(cum[-1] > 0, jnp.searchsorted(cum, u[i - 1] * cum[-1]),
                     jnp.floor(u[i - 1] * n).astype(jnp.int32))
    cand = jnp.minimum(cand, n - 1)
    d = jnp.minimum(closest[None, :], sq_dist(x[cand]))
    best = jnp.argmin(jnp.sum(d, axis=1))
    return centres.at[i].set(x[cand[best]]), d[best]

  centres, _ = jax.lax.fori_loop(1, k, body, (centres, closest))
  return centres


def kmeans_plus_plus(features, k: int, rng: np.random.Generator, n_local_trials=None):
  """Greedy k-means++ seeding (Arthur & Vassilvitskii, "k-means++: The Advantages of Careful
  Seeding", SODA 2007; the greedy variant of sklearn's ``_kmeans_plusplus``): the first centre
  uniformly, then each next centre the best (lowest total squared distance) of ``2 + ln k``
  candidates drawn with probability proportional to the squared distance to the nearest centre
  so far. The random draws come from ``rng``; the selection runs jitted.

  Returns:
    (k, D) float32 centres, rows of ``features``.
  """
  x = np.asarray(features, np.float32)
  n = x.shape[0]
  if not 0 < k <= n:
    raise ValueError(f'need 0 < k <= N, got k={k}, N={n}')
  trials = 2 + int(math.log(k)) if n_local_trials is None else n_local_trials
  first = int(rng.integers(n))
  u = rng.random((k - 1, trials)).astype(np.float32)
  return np.asarray(_kmeans_plus_plus(jnp.asarray(x), first, jnp.asarray(u), trials))


@functools.partial(jax.jit, static_argnames=('chunk',))
def _assign(x, c, chunk: int):
  xs, _ = _chunked(x, chunk)
  labels, dist = jax.lax.map(lambda xc: _nearest(xc, c), xs)
  return labels.reshape(-1)[:x.shape[0]], dist.reshape(-1)[:x.shape[0]]


@functools.partial(jax.jit, static_argnames=('chunk',))
def _lloyd_step(x, c, chunk: int):
  """One Lloyd iteration: assign, then each centre to the mean of its frames; an empty cluster
  moves to the frames farthest from their centres (sklearn's relocation), j-th empty to j-th
  farthest. Returns (new centres, inertia of the assignment, squared centre shift)."""
  k = c.shape[0]
  xs, ws = _chunked(x, chunk)

  def block(carry, xw):
    sums, counts, inertia = carry
    xc, wc = xw
    label, dist = _nearest(xc, c)
    dist = dist * wc
    sums = sums + jax.ops.segment_sum(xc * wc[:, None], label, k)
    counts = counts + jax.ops.segment_sum(wc, label, k)
    return (sums, counts, inertia + jnp.sum(dist)), dist

  init = (jnp.zeros_like(c), jnp.zeros((k,), jnp.float32), jnp.zeros((), jnp.float32))
  (sums, counts, inertia), dist = jax.lax.scan(block, init, (xs, ws))
  empty = counts == 0
  far = jax.lax.top_k(dist.reshape(-1), k)[1]
  relocated = xs.reshape(-1, x.shape[1])[far[jnp.maximum(jnp.cumsum(empty) - 1, 0)]]
  new = jnp.where(empty[:, None], relocated, sums / jnp.maximum(counts, 1.0)[:, None])
  return new, inertia, jnp.sum((new - c) ** 2)


@functools.partial(jax.jit, static_argnames=('chunk',))
def _minibatch_step(x_batch, c, seen, chunk: int):
  """Sculley's mini-batch k-means ("Web-Scale K-Means Clustering", WWW 2010): each centre moves
  toward the mean of its batch frames with rate (batch count) / (total count so far)."""
  k = c.shape[0]
  label, _ = _assign(x_batch, c, chunk)
  counts = jax.ops.segment_sum(jnp.ones_like(label, jnp.float32), label, k)
  sums = jax.ops.segment_sum(x_batch, label, k)
  seen = seen + counts
  rate = jnp.where(counts > 0, counts / jnp.maximum(seen, 1.0), 0.0)[:, None]
  new = c + rate * (sums / jnp.maximum(counts, 1.0)[:, None] - c)
  return new, seen, jnp.sum((new - c) ** 2)


def fit_kmeans(features, k: int, seed: int = 0, iters: int = 100, batch_size: int | None = None,
               tol: float = 1e-4, n_init: int = 1, chunk: int = _CHUNK) -> np.ndarray:
  """k-means centroids of ``features`` (N, D): k-means++ seeding, then Lloyd iterations.

  Deterministic in (features, k, seed): the seeding and the mini-batches come from
  ``np.random.default_rng(seed)``, the iterations are fixed-order jitted reductions.

  Args:
    features: (N, D) array (e.g. MFCC + deltas, D = 39), cast to float32.
    k: number of clusters (HuBERT: 100 on MFCCs, 500 on transformer features).
    seed: seed of the k-means++ draws (and of the mini-batches).
    iters: maximum Lloyd iterations (or mini-batch steps).
    batch_size: None for full-batch Lloyd; an int for mini-batch k-means with batches of that
      many frames drawn without replacement each step (fairseq's MiniBatchKMeans uses 10,000).
    tol: full batch: stop when the summed squared centre shift is at most ``tol`` times the
      mean per-dimension variance of the data (sklearn KMeans' criterion); 0 runs every
      iteration.
      Mini-batch runs all ``iters`` steps.
    n_init: k-means++ seedings tried; the one of lowest inertia on the seeding frames is
      iterated (sklearn MiniBatchKMeans' ``n_init``; fairseq passes 20).
    chunk: frames per distance block (memory: chunk x k floats).

  Returns:
    (k, D) float32 centroids.
  """
  x_np = np.asarray(features, np.float32)
  rng = np.random.default_rng(seed)
  n = x_np.shape[0]
  # Mini-batch seeds on 3 * batch_size frames (sklearn MiniBatchKMeans' default init_size); full
  # batch on every frame.
  if batch_size is not None and n > 3 * batch_size:
    x_seed = x_np[rng.choice(n, 3 * batch_size, replace=False)]
  else:
    x_seed = x_np
  c = min((kmeans_plus_plus(x_seed, k, rng) for _ in range(n_init)),
          key=lambda c0: kmeans_inertia(x_seed, c0, chunk))
  threshold = tol * float(np.var(x_np, axis=0).mean())
  c = jnp.asarray(c)
  x = jnp.asarray(x_np)
  chunk = min(chunk, n if batch_size is None else batch_size)
  if batch_size is None:
    for _ in range(iters):
      c, _, shift = _lloyd_step(x, c, chunk)
      if float(shift) <= threshold:
        break
  else:
    seen = jnp.zeros((k,), jnp.float32)
    for _ in range(iters):
      rows = np.sort(rng.choice(n, min(batch_size, n), replace=False))
      c, seen, shift = _minibatch_step(x[rows], c, seen, chunk)
  return np.asarray(c)


def assign(features, centroids, chunk: int = _CHUNK) -> np.ndarray:
  """(N,) int32 index of the nearest centroid of every frame (fairseq's dump_km_label)."""
  x = jnp.asarray(np.asarray(features, np.float32))
  labels, _ = _assign(x, jnp.asarray(centroids, jnp.float32), min(chunk, x.shape[0]))
  return np.asarray(labels)


def kmeans_inertia(features, centroids, chunk: int = _CHUNK) -> float:
  """Sum of squared distances of every frame to its nearest centroid."""
  x = jnp.asarray(np.asarray(features, np.float32))
  _, dist = _assign(x, jnp.asarray(centroids, jnp.float32), min(chunk, x.shape[0]))
  return float(jnp.sum(dist))


def _joint(phones, units):
  """Joint distribution p(y, z) of two (N,) label arrays as a dense table."""
  _, y = np.unique(np.asarray(phones), return_inverse=True)
  _, z = np.unique(np.asarray(units), return_inverse=True)
  table = np.zeros((y.max() + 1, z.max() + 1), np.float64)
  np.add.at(table, (y.ravel(), z.ravel()), 1.0)
  return table / table.sum()


def pnmi(phones, units) -> float:
  r"""Phone-normalised mutual information (HuBERT):

  .. math::
     \mathrm{PNMI} = \frac{I(y; z)}{H(y)}
       = \frac{\sum_{i,j} p_{yz}(i, j) \log \frac{p_{yz}(i, j)}{p_y(i) p_z(j)}}
              {-\sum_i p_y(i) \log p_y(i)},

  the fraction of the uncertainty about the phone y of a frame removed by knowing its unit z:
  1 when the units determine the phones, 0 when they are independent. ``phones`` and
  ``units`` are (N,) frame labels of any hashable dtype.
  """
  p = _joint(phones, units)
  py, pz = p.sum(1), p.sum(0)
  nz = p > 0
  mi = float(np.sum(p[nz] * np.log(p[nz] / np.outer(py, pz)[nz])))
  h = float(-np.sum(py * np.log(py)))
  return mi / h if h > 0 else 0.0


def phone_purity(phones, units) -> float:
  r"""Phone purity (HuBERT): :math:`\mathbb{E}_{p_z(j)}[\max_i p_{y|z}(i \mid j)]`, the
  frame accuracy of labelling each unit with its most frequent phone."""
  return float(_joint(phones, units).max(axis=0).sum())


def cluster_purity(phones, units) -> float:
  r"""Cluster purity (HuBERT): :math:`\mathbb{E}_{p_y(i)}[\max_j p_{z|y}(j \mid i)]`, the
  frame accuracy of labelling each phone with its most frequent unit."""
  return float(_joint(phones, units).max(axis=1).sum())
