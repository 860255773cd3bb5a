"""Frozen-encoder feature extraction over a data source, jitted and sharded over the mesh."""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

from ssl_jax.data import pipeline
from ssl_jax.train import sharding


def make_feature_fn(method, mesh):
  """jit of ``method.features`` with the batch split over the mesh and replicated output."""
  return jax.jit(lambda params, buffers, images: method.features(params, buffers, images),
                 out_shardings=sharding.replicated(mesh))


def extract_features(feature_fn, params, buffers, source, *, mesh, image_size: int,
                     batch_size: int, crop_frac: float = 1.0):
  """(features (N, D) float32, labels (N,)) of every image of ``source``, in order."""
  pi, pc = jax.process_index(), jax.process_count()
  feats, labels = [], []
  for images, labs, valid in pipeline.eval_batches(source, image_size, batch_size, crop_frac,
                                                   pi, pc):
    x = sharding.global_batch(mesh, images)
    f = np.asarray(feature_fn(params, buffers, x))
    lab = labs if pc == 1 else multihost_utils.process_allgather(labs, tiled=True)
    val = valid if pc == 1 else multihost_utils.process_allgather(valid, tiled=True)
    feats.append(f[val])
    labels.append(np.asarray(lab)[val])
  return np.concatenate(feats), np.concatenate(labels)
