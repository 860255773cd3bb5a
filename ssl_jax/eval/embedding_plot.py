"""2-D map of frozen-encoder embeddings coloured by label: t-SNE (van der Maaten & Hinton 2008,
scikit-learn) or UMAP (McInnes et al. 2018, needs the optional ``umap-learn`` package), saved as
a PNG. Features are L2-normalised first (the geometry kNN uses) and at most ``max_points`` of them,
drawn with a fixed seed, are embedded so the plot takes seconds."""
from __future__ import annotations

import io

import numpy as np

from ssl_jax import paths


def embed_2d(feats, method: str = 'tsne', seed: int = 0) -> np.ndarray:
  """(N, 2) coordinates of L2-normalised ``feats``."""
  x = np.asarray(feats, np.float32)
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  if method == 'tsne':
    from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(2, perplexity=perplexity, init='pca', random_state=seed).fit_transform(x)
  if method == 'umap':
    try:
      import umap  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ValueError("config.eval.plot='umap' needs `pip install umap-learn`; use 'tsne'") from e
    return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
  raise ValueError(f"config.eval.plot={method!r}: choose 'tsne', 'umap' or ''")


def save_embedding_plot(feats, labels, path: str, *, method: str = 'tsne',
                        max_points: int = 2000, seed: int = 0, title: str = '') -> str:
  """Writes the PNG to ``path`` and returns it."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  feats, labels = np.asarray(feats), np.asarray(labels)
  if len(feats) > max_points:
    idx = np.random.default_rng(seed).choice(len(feats), max_points, replace=False)
    feats, labels = feats[idx], labels[idx]
  xy = embed_2d(feats, method, seed)
  fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
  sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap='tab10' if labels.max() < 10 else 'tab20',
                  s=4, alpha=0.8)
  ax.legend(*sc.legend_elements(), loc='best', fontsize=7, markerscale=1.0, title='label')
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title or f'{method.upper()} of {len(feats)} embeddings')
  fig.tight_layout()
  buf = io.BytesIO()   # then one write: a local path or a URL (gs://...) alike
  fig.savefig(buf, format='png')
  plt.close(fig)
  paths.as_path(path).write_bytes(buf.getvalue())
  return path
