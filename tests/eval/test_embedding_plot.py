"""The eval plot's 2-D embedding (eval/embedding_plot.py): t-SNE and UMAP keep two well-separated
clusters apart, and UMAP without its package stops with the install line."""
import sys

import numpy as np
import pytest

from ssl_jax.eval import embedding_plot


def _two_clusters(n=60, dim=16):
  rng = np.random.default_rng(0)
  centre = rng.normal(size=(2, dim)) * 3
  labels = np.repeat([0, 1], n // 2)
  return centre[labels] + rng.normal(size=(n, dim)) * 0.3, labels


def _separated(xy, labels):
  """Every point's nearest other point has its label (1-NN accuracy 1 in the 2-D map)."""
  d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
  np.fill_diagonal(d, np.inf)
  return np.mean(labels[np.argmin(d, axis=1)] == labels)


def test_tsne_keeps_clusters_apart():
  x, labels = _two_clusters()
  xy = embedding_plot.embed_2d(x, 'tsne')
  assert xy.shape == (len(x), 2)
  assert _separated(xy, labels) == 1.0


def test_umap_without_the_package_names_the_fix(monkeypatch):
  monkeypatch.setitem(sys.modules, 'umap', None)   # import umap -> ImportError
  with pytest.raises(ValueError, match='pip install umap-learn'):
    embedding_plot.embed_2d(np.zeros((4, 3)), 'umap')
  with pytest.raises(ValueError, match="choose 'tsne', 'umap'"):
    embedding_plot.embed_2d(np.zeros((4, 3)), 'pca')


@pytest.mark.slow   # numba compiles UMAP for ~15-30 s on first use
def test_umap_keeps_clusters_apart(tmp_path):
  pytest.importorskip('umap', reason='optional: pip install umap-learn')
  x, labels = _two_clusters()
  xy = embedding_plot.embed_2d(x, 'umap')
  assert xy.shape == (len(x), 2) and np.all(np.isfinite(xy))
  assert _separated(xy, labels) == 1.0
  path = embedding_plot.save_embedding_plot(x, labels, str(tmp_path / 'umap.png'), method='umap')
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
