"""InfoMin view-selection tooling (Tian, Sun, Poole, Krishnan, Schmid & Isola, "What Makes for Good
Views for Contrastive Learning?", NeurIPS 2020).

* ``info_nce_lower_bound``: the InfoNCE estimate of the mutual information between two views,
  I(v1; v2) >= log N - L_NCE (van den Oord et al. 2018; InfoMin Eq. 1-2), from paired embeddings.
* ``patch_pair``: two square patches of an image whose centres are a given distance apart (the
  InfoMin Sec. 3.2 "spatial distance between patches" experiment).
* ``sweep``: for each view setting (patch distance), train a small encoder with InfoNCE on such
  pairs, then record the InfoNCE estimate on held-out pairs and the downstream kNN accuracy of the
  encoder; the result traces the paper's inverted-U (reverse-U) curve of accuracy against
  I_NCE. ``benchmarks/infomin_sweep.py`` prints the table and writes the PNG plot.

The InfoMin augmentation recipe is ``configs/infomin.py``.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax import losses
from ssl_jax.eval import knn


def info_nce_lower_bound(z1, z2, temperature: float = 0.1):
  r"""(I_NCE estimate in nats, L_NCE) for N paired embeddings (row i of z1 pairs with row i of z2).

  .. math::
     \mathcal{L}_{NCE} = -\frac1N \sum_i \log \frac{e^{s(z^1_i, z^2_i)/\tau}}
                         {\sum_j e^{s(z^1_i, z^2_j)/\tau}}, \qquad
     I(v_1; v_2) \ge \log N - \mathcal{L}_{NCE},

  with cosine similarity s; the bound saturates at log N.
  """
  a, b = losses.l2_normalize(z1), losses.l2_normalize(z2)
  logits = a @ b.T / temperature
  l_nce = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=-1)))
  return math.log(z1.shape[0]) - l_nce, l_nce


def patch_pair(image: np.ndarray, size: int, distance: float, rng: np.random.Generator):
  """Two ``size`` x ``size`` patches of ``image`` (zero-padded by ``size`` on every side) whose
  centres are ``distance`` pixels apart in a random direction; the first centre is uniform over
  the positions that keep both inside the padded image."""
  pad = size
  img = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  h, w = img.shape[:2]
  theta = rng.uniform(0, 2 * np.pi)
  dy, dx = int(round(distance * np.sin(theta))), int(round(distance * np.cos(theta)))
  lo_y, hi_y = max(0, -dy), min(h - size, h - size - dy)
  lo_x, hi_x = max(0, -dx), min(w - size, w - size - dx)
  if hi_y < lo_y or hi_x < lo_x:
    raise ValueError(f'distance {distance} too large for {image.shape[:2]} images and {size} px '
                     'patches')
  # the first patch's centre on the original image where possible
  def first(lo, hi, n):
    a, b = max(lo, pad - size // 2), min(hi, pad + n - size // 2 - 1)
    return int(rng.integers(a, b + 1)) if a <= b else int(rng.integers(lo, hi + 1))
  y0, x0 = first(lo_y, hi_y, image.shape[0]), first(lo_x, hi_x, image.shape[1])
  return img[y0:y0 + size, x0:x0 + size], img[y0 + dy:y0 + dy + size, x0 + dx:x0 + dx + size]


class SmallEncoder(nn.Module):
  """A 4-layer CNN encoder (conv-BN-free, ReLU, global average pool) and a linear projection."""
  width: int = 32
  out_dim: int = 64

  @nn.compact
  def __call__(self, x, project: bool = True):
    for i, (c, s) in enumerate([(self.width, 1), (2 * self.width, 2), (2 * self.width, 1),
                                (4 * self.width, 2)]):
      x = nn.relu(nn.Conv(c, (3, 3), (s, s), name=f'conv{i}')(x))
    h = x.mean(axis=(1, 2))
    return nn.Dense(self.out_dim, name='proj')(nn.relu(h)) if project else h


def _nt_xent_safe(za, zb, temperature):
  """SimCLR's NT-Xent (``losses.nt_xent``) with the L2 normalisation z / sqrt(|z|^2 + 1e-6):
  blank patches (all padding) embed to exactly 0, where the gradient of |z| is undefined."""
  n = za.shape[0]
  z = jnp.concatenate([za, zb], axis=0)
  z = z / jnp.sqrt(jnp.sum(z * z, axis=-1, keepdims=True) + 1e-6)
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, z @ z.T / temperature)
  pos = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(0, n)])
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits, -1), pos[:, None], -1))


def _pairs(images, idx, size, distance, rng):
  a, b = zip(*(patch_pair(images[i], size, distance, rng) for i in idx))
  return np.stack(a).astype(np.float32) / 255.0, np.stack(b).astype(np.float32) / 255.0


def _center(images, size):
  h, w = images.shape[1:3]
  y0, x0 = (h - size) // 2, (w - size) // 2
  return images[:, y0:y0 + size, x0:x0 + size].astype(np.float32) / 255.0


def run_setting(train_images, train_labels, test_images, test_labels, *, distance: float,
                size: int = 16, steps: int = 150, batch: int = 128, temperature: float = 0.1,
                lr: float = 2e-3, width: int = 32, seed: int = 0) -> dict:
  """Trains a ``SmallEncoder`` with InfoNCE on patch pairs ``distance`` apart; returns the held-out
  InfoNCE estimate (nats, batch ``batch``), the mean realised distance and the kNN top-1 of the
  pooled feature of the centre patch."""
  rng = np.random.default_rng(seed)
  model = SmallEncoder(width)
  params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, size, size, 3)))
  tx = optax.adam(lr)
  opt = tx.init(params)

  def loss_fn(p, a, b):
    return _nt_xent_safe(model.apply(p, a), model.apply(p, b), temperature)

  @jax.jit
  def step(p, o, a, b):
    l, g = jax.value_and_grad(loss_fn)(p, a, b)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, l

  for _ in range(steps):
    a, b = _pairs(train_images, rng.integers(0, len(train_images), batch), size, distance, rng)
    params, opt, _ = step(params, opt, a, b)

  embed = jax.jit(lambda p, x: model.apply(p, x))
  est = []
  for i in range(0, len(test_images) - batch + 1, batch):
    a, b = _pairs(test_images, np.arange(i, i + batch), size, distance, rng)
    est.append(float(info_nce_lower_bound(embed(params, a), embed(params, b), temperature)[0]))
  feat = jax.jit(lambda p, x: model.apply(p, x, project=False))
  f_tr = np.concatenate([np.asarray(feat(params, _center(train_images[i:i + 500], size)))
                         for i in range(0, len(train_images), 500)])
  f_te = np.concatenate([np.asarray(feat(params, _center(test_images[i:i + 500], size)))
                         for i in range(0, len(test_images), 500)])
  acc = knn.knn_top1(f_tr, train_labels, f_te, test_labels, k=20, temperature=0.07,
                     num_classes=int(train_labels.max()) + 1)
  return {'distance': distance, 'info_nce': float(np.mean(est)), 'info_nce_max': math.log(batch),
          'knn_top1': acc}


def sweep(train_images, train_labels, test_images, test_labels, distances, **kw) -> list[dict]:
  """``run_setting`` for every distance (same seed, so only the views differ)."""
  return [run_setting(train_images, train_labels, test_images, test_labels, distance=d, **kw)
          for d in distances]


def plot(rows, path: str, random_knn: float | None = None):
  """Writes the accuracy-vs-I_NCE plot (points annotated with the patch distance) to ``path``;
  ``random_knn``: the kNN top-1 of the untrained encoder, drawn as a dashed reference line."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 4))
  x = [r['info_nce'] for r in rows]
  y = [100 * r['knn_top1'] for r in rows]
  ax.plot(x, y, 'o-')
  for r, xi, yi in zip(rows, x, y):
    ax.annotate(f"d={r['distance']:g}", (xi, yi), textcoords='offset points', xytext=(4, 4))
  if random_knn is not None:
    ax.axhline(100 * random_knn, ls='--', c='gray', label='untrained encoder')
    ax.legend(loc='lower right')
  ax.set_xlabel('I_NCE(v1; v2) estimate [nats]')
  ax.set_ylabel('kNN top-1 [%]')
  ax.set_title('InfoMin: views at different patch distances')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
