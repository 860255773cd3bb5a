"""Frozen-encoder feature extraction over a data source, jitted and sharded over the mesh."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from ssl_jax.data import modality, pipeline, sources
from ssl_jax.train import experiment as experiment_lib
from ssl_jax.train import sharding


make_feature_fn = experiment_lib.make_feature_fn  # the restorable run's feature function


def extract_features(feature_fn, params, buffers, source, *, mesh, image_size: int,
                     batch_size: int, crop_frac: float = 1.0, view=None):
  """(features (N, D) float32, labels (N,)) of every record of ``source``, in order; ``view``
  (record -> array) replaces the image centre crop for other modalities (``data.modality``)."""
  pi, pc = jax.process_index(), jax.process_count()
  feats, labels = [], []
  for images, labs, valid in pipeline.eval_batches(source, image_size, batch_size, crop_frac,
                                                   pi, pc, view=view):
    x = sharding.global_batch(mesh, images)
    f = np.asarray(feature_fn(params, buffers, x))
    lab = labs if pc == 1 else multihost_utils.process_allgather(labs, tiled=True)
    val = valid if pc == 1 else multihost_utils.process_allgather(valid, tiled=True)
    feats.append(f[val])
    labels.append(np.asarray(lab)[val])
  return np.concatenate(feats), np.concatenate(labels)


class EvalFeatures(NamedTuple):
  """Frozen features of the two evaluation splits of ``config.data`` and their sources."""
  train_feats: np.ndarray
  train_labels: np.ndarray
  test_feats: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  train_source: Any
  test_source: Any


def eval_split_features(feature_fn, params, buffers, config, mesh) -> EvalFeatures:
  """Features of ``data.eval_train_split`` (kNN memory bank / probe training set) and
  ``data.eval_split`` (queries): centre crops at ``data.image_size``, or the eval view of
  ``data.modality`` (``data/modality.py``)."""
  c = config
  kw = dict(mesh=mesh, image_size=c.data.image_size, batch_size=c.eval.batch_size,
            crop_frac=c.data.eval_crop_frac, view=modality.eval_view(c.data))
  train_src = sources.get_source(c.data, c.data.eval_train_split)
  test_src = sources.get_source(c.data, c.data.eval_split)
  f_tr, y_tr = extract_features(feature_fn, params, buffers, train_src, **kw)
  f_te, y_te = extract_features(feature_fn, params, buffers, test_src, **kw)
  return EvalFeatures(f_tr, y_tr, f_te, y_te, train_src.num_classes, train_src, test_src)
