"""Pieces several methods share: projector / predictor heads and fixed-size queues (functional).

The EMA teacher is ``methods/teacher.py``; ``ema_update``, ``momentum_schedule`` and
``EMAHparams`` stay importable from here for code written before it."""
from __future__ import annotations

import dataclasses

import jax

from ssl_jax.methods.teacher import EMAHparams, ema_update, momentum_schedule  # noqa: F401
from ssl_jax.models.heads import MLP


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProjectorHparams:
  """``config.method.proj_*``: the projector MLP of ``siamese.mlp_from_config`` (``proj_layers``
  counts Dense layers; 0 = none, which the methods that need one refuse)."""
  proj_layers: int = 0
  proj_hidden_dim: int
  proj_dim: int
  proj_bn: bool = True
  proj_last_bn: bool = False
  proj_last_bn_affine: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class PredictorHparams:
  """``config.method.pred_*``: the predictor MLP, as ``ProjectorHparams``."""
  pred_layers: int = 0
  pred_hidden_dim: int
  pred_dim: int
  pred_bn: bool = True
  pred_last_bn: bool = False
  pred_last_bn_affine: bool = True


def enqueue(queue, ptr, items):
  """Writes ``items`` (B, ...) into ring buffer ``queue`` (K, ...) at ``ptr``; returns (queue, ptr).

  K must be a multiple of B (as in MoCo), so a write never wraps; shapes stay static under jit.
  """
  k, b = queue.shape[0], items.shape[0]
  if k % b:
    raise ValueError(f'queue size {k} must be a multiple of the global batch size {b}')
  queue = jax.lax.dynamic_update_slice_in_dim(queue, items.astype(queue.dtype), ptr, axis=0)
  return queue, (ptr + b) % k


# Here rather than in contrastive/siamese.py: CMAE (hybrid/) builds the same heads.
def mlp_from_config(m, prefix: str) -> MLP | None:
  """An MLP head from ``<prefix>_{layers,hidden_dim,dim,bn,last_bn,last_bn_affine}`` of ``m``
  (``config.method`` or a method's typed hyper-parameters: attribute access serves both); None
  when ``<prefix>_layers`` is 0. ``layers`` counts Dense layers (1 = a linear head)."""
  field = lambda name, *default: getattr(m, f'{prefix}_{name}', *default)
  layers = field('layers', 0)
  if not layers:
    return None
  return MLP(hidden_dims=(field('hidden_dim'),) * (layers - 1), out_dim=field('dim'),
             use_bn=field('bn', True), last_bn=field('last_bn', False),
             last_bn_affine=field('last_bn_affine', True))
