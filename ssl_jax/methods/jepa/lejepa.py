"""LeJEPA (Balestriero & LeCun, "LeJEPA: Provable and Scalable Self-Supervised Learning Without
the Heuristics", 2025).

One encoder (backbone + projector MLP), no teacher, no stop-gradient, no predictor network:

* views: ``num_global_crops`` crops of ``data.image_size`` and ``num_local_crops`` crops of
  ``local_crop_size`` per image (the paper's ViTs: 2 x 224 + 6 x 96; a ResNet or the MINIMAL
  example: V same-size views, no locals). Crops of one size share one backbone call.
* loss (``losses.lejepa_loss``): (1 - lambda) x the prediction loss (every view's projection
  predicts the mean projection of the global views, squared error) + lambda x SIGReg
  (``losses.sigreg``: the Epps-Pulley statistic of the projections on ``num_slices`` random unit
  directions, per view, averaged).
* SIGReg is a statistic of the *global* batch: the projections are one jax.Array sharded over the
  mesh, so its means (and their backward) are global under jit; the directions are drawn from the
  step's key, so every device uses the same ones, and they change every step.

Evaluation (``features``) and export use the backbone's pooled output (the paper probes the
backbone, not the projector).

Metrics: ``prediction``, ``sigreg`` (the two terms before weighting).

Config (``config.method``): lambd, num_slices, t_max, knots, num_global_crops, num_local_crops,
local_crop_size, global_crop_scale, local_crop_scale, proj_layers, proj_hidden_dim, proj_dim,
proj_bn. ``config.aug.recipe``: one recipe name for every view, or (global, local).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.data import augment
from ssl_jax.data.pipeline import CropSpec
from ssl_jax.methods import common
from ssl_jax.methods.base import Method, apply_module, init_module


class LeJEPA(Method):
  """LeJEPA: multi-view prediction of the global views' mean + SIGReg."""

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams, common.ProjectorHparams):
    lambd: float = 0.05
    num_slices: int = 1024
    t_max: float = 3.0
    knots: int = 17
    num_global_crops: int = 2
    num_local_crops: int = 0
    local_crop_size: int = 96
    global_crop_scale: tuple[float, float] = (0.3, 1.0)
    local_crop_scale: tuple[float, float] = (0.05, 0.3)

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    if m.num_global_crops < 1:
      raise ValueError(f'config.method.num_global_crops={m.num_global_crops}: LeJEPA needs at '
                       'least one global view (its views predict their mean)')
    if not 0.0 <= m.lambd <= 1.0:
      raise ValueError(f'config.method.lambd={m.lambd} must be in [0, 1] (the SIGReg weight)')
    self.projector = common.mlp_from_config(m, 'proj')
    if self.projector is None:
      raise ValueError('config.method.proj_layers=0: LeJEPA needs a projector (e.g. 3)')
    self.view_names = ([f'global{i}' for i in range(m.num_global_crops)]
                       + [f'local{i}' for i in range(m.num_local_crops)])

  # -- data -------------------------------------------------------------------------------------
  def crop_specs(self):
    d, m = self.config.data, self.hp
    specs = [CropSpec(f'global{i}', d.image_size, tuple(m.global_crop_scale), flip=d.flip)
             for i in range(m.num_global_crops)]
    specs += [CropSpec(f'local{i}', m.local_crop_size, tuple(m.local_crop_scale), flip=d.flip)
              for i in range(m.num_local_crops)]
    return tuple(specs)

  def _recipes(self):
    """(global recipe, local recipe) from ``config.aug.recipe`` (one name or two)."""
    recipe = self.config.aug.recipe
    names = (recipe, recipe) if isinstance(recipe, str) else tuple(recipe)
    if len(names) != 2:
      raise ValueError(f'config.aug.recipe={recipe!r}: LeJEPA takes one recipe name or two '
                       '(global views, local views)')
    over = dict(self.config.aug.get('overrides', {}))
    return tuple(augment.get_recipe(n, **over) for n in names)

  def views(self, batch, rng):
    rec_g, rec_l = self._recipes()
    keys = jax.random.split(rng, len(self.view_names))
    return {name: augment.augment_batch(key, batch[name],
                                        rec_g if name.startswith('global') else rec_l)
            for name, key in zip(self.view_names, keys)}

  # -- state ------------------------------------------------------------------------------------
  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    x = jnp.zeros((2,) + batch['global0'].shape[1:], jnp.float32)
    bb_params, bb_stats = init_module(self.backbone, k1, x)
    pj_params, pj_stats = init_module(self.projector, k2,
                                      jnp.zeros((2, self.feature_dim), jnp.float32))
    stats = {k: v for k, v in (('backbone', bb_stats), ('projector', pj_stats)) if v}
    return {'backbone': bb_params, 'projector': pj_params}, (
        {'batch_stats': stats} if stats else {})

  # -- training ---------------------------------------------------------------------------------
  def embed(self, params, buffers, views, rng):
    """(V, B, K) projections of every view (globals first) and the new BatchNorm statistics.
    The projector sees all views at once (one BatchNorm batch, as the official code)."""
    m = self.hp
    stats = buffers.get('batch_stats', {})
    bb_stats = stats.get('backbone', {})
    groups = [[f'global{i}' for i in range(m.num_global_crops)],
              [f'local{i}' for i in range(m.num_local_crops)]]
    feats = []
    for names, key in zip(groups, jax.random.split(rng)):
      if names:
        x = jnp.concatenate([views[n] for n in names])
        f, bb_stats = apply_module(self.backbone, params['backbone'], bb_stats, x, train=True,
                                   rngs={'dropout': key})
        feats.append(f)
    z, pj_stats = apply_module(self.projector, params['projector'], stats.get('projector', {}),
                               jnp.concatenate(feats), train=True)
    new = {k: v for k, v in (('backbone', bb_stats), ('projector', pj_stats)) if v}
    b = views['global0'].shape[0]
    return z.reshape(len(self.view_names), b, -1), new

  def loss(self, params, state, views, rng):
    m = self.hp
    k_fwd, k_dirs = jax.random.split(rng)
    z, new_stats = self.embed(params, state.buffers, views, k_fwd)
    loss, aux = losses.lejepa_loss(z, m.num_global_crops, k_dirs, m.lambd, m.num_slices,
                                   m.t_max, m.knots)
    buffers = dict(state.buffers, batch_stats=new_stats) if new_stats else state.buffers
    return loss, (aux, buffers)
