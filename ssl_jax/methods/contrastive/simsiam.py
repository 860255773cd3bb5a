"""SimSiam (Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021).

BYOL without the momentum encoder: both branches share the weights and the stop-gradient on the
projection alone prevents collapse. The loss is the symmetrised negative cosine (Eq. 1-2,
``losses.negative_cosine``):

    L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2.

Heads as the paper (Sec. 3/4): projector 3 x (Dense-BN), ReLU between, the output BN without
affine parameters; predictor bottleneck Dense(512)-BN-ReLU-Dense(2048). ``method.fix_pred_lr``
keeps the predictor at the base learning rate (no cosine decay; the paper's Sec. 4.4 / official
``--fix-pred-lr``) via an optax ``multi_transform`` in ``build_optimizer``.

The metric ``z_std`` is the paper's collapse monitor (Fig. 2): the per-channel std of the
L2-normalised projection, about 1/sqrt(d) when healthy and 0 when collapsed.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods import common
from ssl_jax.methods.contrastive.siamese import SiameseMethod


class SimSiam(SiameseMethod):
  """SimSiam: predictor + stop-gradient, no EMA target."""

  use_target = False
  use_predictor = True

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(SiameseMethod.Hparams, common.PredictorHparams):
    fix_pred_lr: bool = False

  def loss(self, params, state, views, rng):
    k1, k2 = jax.random.split(rng)
    stats = state.buffers['batch_stats']
    z1, p1, stats = self.online(params, stats, views['view0'], k1)
    z2, p2, stats = self.online(params, stats, views['view1'], k2)
    sg = jax.lax.stop_gradient
    loss = 0.5 * losses.negative_cosine(p1, sg(z2)) + 0.5 * losses.negative_cosine(p2, sg(z1))
    z_std = jnp.mean(jnp.std(losses.l2_normalize(z1), axis=0))
    return loss, ({'z_std': sg(z_std)}, dict(state.buffers, batch_stats=stats))

  def param_label(self, path: str) -> str:
    if self.hp.fix_pred_lr and path.startswith("['predictor']"):
      return 'fixed_lr'
    return 'train'
