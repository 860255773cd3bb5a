"""SwAV (Caron, Misra, Mairal, Goyal, Bojanowski & Joulin, "Unsupervised Learning of Visual
Features by Contrasting Cluster Assignments", NeurIPS 2020).

Multi-crop: two global crops (``data.image_size``, scale ``data.crop_scale``) and
``method.num_local`` local crops (``method.local_size``, scale ``method.local_scale``), each colour-
augmented on device with its recipe. Crops of one resolution share one backbone call (as the
official code groups crops by size); the projector (Linear-BN-ReLU-Linear) runs on all crops at
once, its outputs are L2-normalised and scored against K L2-normalised prototypes (trainable
params, renormalised after every update as the official code does before every forward).

Codes come from Sinkhorn-Knopp over the *global* batch on the two global crops only, without
gradient; every other crop predicts them (``losses.swav``). Options, as the official code:

* ``queue_length`` > 0: a FIFO of the last ``queue_length`` global-crop embeddings of each global
  crop (``buffers['queue']``) is scored with the current prototypes and prepended to the batch in
  Sinkhorn. It starts filling at ``queue_start_step`` and takes part once full.
* ``freeze_prototypes_steps``: before that step the prototypes get no gradient and no optimizer
  update at all (no weight decay, no momentum), like the official ``p.grad = None``.

Config (``config.method``): temperature, epsilon, sinkhorn_iterations, num_prototypes,
proj_hidden_dim, proj_dim, num_local, local_size, local_scale, queue_length, queue_start_step,
freeze_prototypes_steps.
"""
from __future__ import annotations

import dataclasses

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ssl_jax import losses
from ssl_jax.data.pipeline import CropSpec
from ssl_jax.methods.base import Method, apply_module, init_module
from ssl_jax.models.heads import MLP


class FreezeState(NamedTuple):
  count: jax.Array
  inner: optax.OptState


def freeze_until(inner: optax.GradientTransformation, steps: int, mask_fn):
  """Wraps ``inner`` so that the leaves selected by ``mask_fn(params)`` are frozen for the first
  ``steps`` updates: the wrapped optimizer sees zero gradients *and* zero params for them (so
  weight decay, momentum and LARS trust ratios leave them untouched) and their updates are zero.
  Counters and schedules of ``inner`` keep advancing, so the lr schedule is not shifted."""

  def init(params):
    return FreezeState(jnp.zeros((), jnp.int32), inner.init(params))

  def update(updates, state, params=None):
    frozen = state.count < steps
    mask = mask_fn(updates)
    zero = lambda tree: jax.tree_util.tree_map(
        lambda m, x: jnp.where(frozen & m, jnp.zeros_like(x), x), mask, tree)
    new, inner_state = inner.update(zero(updates), state.inner,
                                    None if params is None else zero(params))
    return zero(new), FreezeState(state.count + 1, inner_state)

  return optax.GradientTransformation(init, update)


def _prototype_mask(tree):
  return {k: jax.tree_util.tree_map(lambda _: k == 'prototypes', v) for k, v in tree.items()}


class SwAV(Method):
  """SwAV with multi-crop, Sinkhorn-Knopp over the global batch, optional queue."""

  assign_crops = (0, 1)

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams):
    temperature: float
    epsilon: float
    sinkhorn_iterations: int
    num_prototypes: int
    proj_hidden_dim: int
    proj_dim: int
    num_local: int
    local_size: int
    local_scale: tuple[float, float]
    queue_length: int = 0
    queue_start_step: int = 0
    freeze_prototypes_steps: int = 0

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.num_local = m.num_local
    self.num_views = 2 + m.num_local
    self.temperature = m.temperature
    self.epsilon = m.epsilon
    self.iterations = m.sinkhorn_iterations
    self.num_prototypes = m.num_prototypes
    self.proj_dim = m.proj_dim
    self.queue_length = m.queue_length
    self.queue_start = m.queue_start_step
    self.freeze_steps = m.freeze_prototypes_steps
    self.projector = MLP(hidden_dims=(m.proj_hidden_dim,), out_dim=m.proj_dim, use_bn=True)
    if self.queue_length and self.queue_length < config.data.batch_size:
      raise ValueError(f'config.method.queue_length={self.queue_length} must be 0 (no queue) or '
                       f'at least config.data.batch_size={config.data.batch_size}')

  # -- data -------------------------------------------------------------------------------------
  def crop_specs(self):
    d, m = self.config.data, self.hp
    specs = [CropSpec(f'view{i}', d.image_size, tuple(d.crop_scale), flip=d.flip) for i in range(2)]
    specs += [CropSpec(f'view{i}', m.local_size, tuple(m.local_scale), flip=d.flip)
              for i in range(2, self.num_views)]
    return tuple(specs)

  # -- training -----------------------------------------------------------------------------------
  def init(self, rng, batch):
    k1, k2, k3 = jax.random.split(rng, 3)
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    bb_params, bb_stats = init_module(self.backbone, k1, x)
    pj_params, pj_stats = init_module(self.projector, k2, jnp.zeros((2, self.feature_dim)))
    protos = losses.l2_normalize(
        jax.random.normal(k3, (self.num_prototypes, self.proj_dim), jnp.float32))
    params = {'backbone': bb_params, 'projector': pj_params, 'prototypes': protos}
    buffers = {'batch_stats': {'backbone': bb_stats, 'projector': pj_stats}}
    if self.queue_length:
      buffers['queue'] = jnp.zeros((len(self.assign_crops), self.queue_length, self.proj_dim),
                                   jnp.float32)
      buffers['queue_count'] = jnp.zeros((), jnp.int32)
    return params, buffers

  def _embed(self, params, stats, views, rng):
    """L2-normalised projections of every crop, (V * B, proj_dim), crops in view order."""
    groups = [g for g in ([0, 1], list(range(2, self.num_views))) if g]
    bb_stats, feats = stats['backbone'], []
    for n, group in enumerate(groups):
      x = jnp.concatenate([views[f'view{i}'] for i in group], axis=0)
      h, bb_stats = apply_module(self.backbone, params['backbone'], bb_stats, x, train=True,
                                 rngs={'dropout': jax.random.fold_in(rng, n)})
      feats.append(h)
    z, pj_stats = apply_module(self.projector, params['projector'], stats['projector'],
                               jnp.concatenate(feats, axis=0), train=True)
    return losses.l2_normalize(z), {'backbone': bb_stats, 'projector': pj_stats}

  def loss(self, params, state, views, rng):
    bsz = views['view0'].shape[0]
    z, new_stats = self._embed(params, state.buffers['batch_stats'], views, rng)
    protos = params['prototypes']
    if self.freeze_steps:
      protos = jnp.where(state.step < self.freeze_steps, jax.lax.stop_gradient(protos), protos)
    scores = z @ protos.T
    crop_scores = [scores[i * bsz:(i + 1) * bsz] for i in range(self.num_views)]
    buffers = dict(state.buffers, batch_stats=new_stats)
    queue_scores = queue_valid = None
    if self.queue_length:
      queue, count = state.buffers['queue'], state.buffers['queue_count']
      queue_scores = [queue[i] @ jax.lax.stop_gradient(protos).T
                      for i in range(len(self.assign_crops))]
      queue_valid = (count >= self.queue_length) & (state.step >= self.queue_start)
      emb = jax.lax.stop_gradient(z)
      pushed = jnp.stack([jnp.concatenate([emb[c * bsz:(c + 1) * bsz], queue[i, :-bsz]], axis=0)
                          for i, c in enumerate(self.assign_crops)])
      filling = state.step >= self.queue_start
      buffers['queue'] = jnp.where(filling, pushed, queue)
      buffers['queue_count'] = jnp.where(
          filling, jnp.minimum(count + bsz, self.queue_length), count)
    loss, aux = losses.swav(crop_scores, self.assign_crops, self.temperature, self.epsilon,
                            self.iterations, queue_scores, queue_valid)
    metrics = dict(aux)
    if self.queue_length:
      metrics['queue_used'] = queue_valid.astype(jnp.float32)
    return loss, (metrics, buffers)

  def after_update(self, state):
    """Prototypes back onto the unit sphere (official: normalised before every forward)."""
    params = dict(state.params, prototypes=losses.l2_normalize(state.params['prototypes']))
    return state.replace(params=params)

  def build_optimizer(self, total_steps: int):
    tx, lr = super().build_optimizer(total_steps)
    if self.freeze_steps:
      tx = freeze_until(tx, self.freeze_steps, _prototype_mask)
    return tx, lr
