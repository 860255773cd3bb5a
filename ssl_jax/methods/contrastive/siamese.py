"""Shared skeleton of the two-view joint-embedding methods with a projector, an optional
predictor and an optional momentum (EMA) target network: MoCo v1/v2/v3, BYOL, SimSiam, NNCLR.

Parameters: ``params = {'backbone', 'projector'[, 'predictor']}`` (the online network).
Buffers:

* ``batch_stats``: the online network's BatchNorm running statistics, per module;
* ``teacher`` (methods with a momentum encoder): the EMA teacher of ``methods/teacher.py``,
  ``{'params': {...}, 'batch_stats': {...}}`` for the backbone and projector. Its params are an
  EMA of the online params (``after_update``: ``teacher.update``, the momentum a pure function of
  the step). Its BatchNorm *statistics* are not averaged: like the key encoder of MoCo and the
  target network of BYOL, the target runs in training mode (it normalises with the batch
  statistics of its own input, which is what the loss sees) and keeps its own running averages
  from those forward passes, exactly as PyTorch's ``encoder_k`` buffers do (MoCo only EMAs
  ``parameters()``). Those running averages are only used if someone evaluates the target
  network in eval mode; evaluation uses the online backbone;
* method extras (queues and their pointers).

Each view goes through the network in its own call, so BatchNorm normalises each view with the
statistics of that view over the *global* batch (sync BN under jit), as the references do with
one forward per view.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from ssl_jax import losses
from ssl_jax.methods import common
from ssl_jax.methods import teacher as teacher_lib
from ssl_jax.methods.common import mlp_from_config
from ssl_jax.methods.base import Method, apply_module, init_module
from ssl_jax import optim as schedules


def random_unit_rows(rng, rows: int, dim: int):
  """(rows, dim) random unit vectors: the initial content of MoCo's queue / NNCLR's support set."""
  return losses.l2_normalize(jax.random.normal(rng, (rows, dim), jnp.float32))


class SiameseMethod(Method):
  """Backbone -> projector [-> predictor], with an optional EMA target (backbone -> projector).

  Subclasses set ``use_target`` and ``use_predictor`` and implement ``loss``; ``init_extra``
  adds their buffers (queues).
  """

  use_target = True
  use_predictor = True
  #: The EMA after the update of step t uses momentum(t) (BYOL's code: tau of the step whose update
  #: just happened). MoCo v3 sets this to 1: its code updates the key encoder at the start of
  #: iteration t+1 with m(t+1), which is the same arithmetic done one call earlier.
  momentum_step_offset = 0

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams, common.ProjectorHparams):
    """The projector; subclasses add ``common.PredictorHparams`` / ``EMAHparams`` as they use
    them."""

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.projector = mlp_from_config(m, 'proj')
    if self.projector is None:
      raise ValueError('config.method.proj_layers must be >= 1')
    self.predictor = mlp_from_config(m, 'pred') if self.use_predictor else None
    if self.use_predictor and self.predictor is None:
      raise ValueError('config.method.pred_layers must be >= 1 for this method')
    self.momentum_fn = (teacher_lib.momentum_schedule(m, config.train.steps) if self.use_target
                        else None)

  # -- modules ------------------------------------------------------------------------------------
  def _modules(self):
    mods = {'backbone': self.backbone, 'projector': self.projector}
    if self.predictor is not None:
      mods['predictor'] = self.predictor
    return mods

  def init(self, rng, batch):
    keys = jax.random.split(rng, 4)
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    params, stats = {}, {}
    for key, (name, module) in zip(keys, self._modules().items()):
      params[name], stats[name] = init_module(module, key, x)
      x = module.apply({'params': params[name], **({'batch_stats': stats[name]} if stats[name]
                                                    else {})}, x, train=False)
    buffers = {'batch_stats': stats}
    if self.use_target:
      buffers[teacher_lib.KEY] = teacher_lib.from_student(params, ('backbone', 'projector'), stats)
    buffers.update(self.init_extra(keys[3]))
    return params, buffers

  def init_extra(self, rng):
    del rng
    return {}

  def online(self, params, stats, x, rng):
    """(z, p, new_stats): projection and prediction (p is None without a predictor), train mode."""
    h, bb = apply_module(self.backbone, params['backbone'], stats['backbone'], x, train=True,
                         rngs={'dropout': rng})
    z, pj = apply_module(self.projector, params['projector'], stats['projector'], h, train=True)
    new = dict(stats, backbone=bb, projector=pj)
    p = None
    if self.predictor is not None:
      p, pd = apply_module(self.predictor, params['predictor'], stats['predictor'], z, train=True)
      new['predictor'] = pd
    return z, p, new

  def target(self, target, x, rng):
    """(z, new_target): the momentum encoder's projection (no gradient), train-mode BatchNorm;
    ``target`` is ``buffers['teacher']``."""
    tp, stats = target['params'], functools.partial(teacher_lib.stats_of, target)
    h, bb = apply_module(self.backbone, tp['backbone'], stats('backbone'), x, train=True,
                         rngs={'dropout': rng})
    z, pj = apply_module(self.projector, tp['projector'], stats('projector'), h, train=True)
    new = teacher_lib.with_stats(target, backbone=bb, projector=pj)
    return jax.lax.stop_gradient(z), jax.lax.stop_gradient(new)

  # -- EMA ----------------------------------------------------------------------------------------
  def momentum_at(self, step):
    return self.momentum_fn(step)

  def after_update(self, state):
    """Target params <- m * target + (1 - m) * online params (MoCo Eq. 2, BYOL Eq. 1)."""
    if not self.use_target:
      return state
    return teacher_lib.update(state, self.momentum_at, self.momentum_step_offset)

  # -- optimizer ----------------------------------------------------------------------------------
  def param_label(self, path: str) -> str:
    """'train' (the configured optimizer), 'frozen' (never updated) or 'fixed_lr' (the optimizer
    at a constant learning rate) for the parameter at ``path`` (a jax keystr)."""
    del path
    return 'train'

  def build_optimizer(self, total_steps: int):
    tx, lr = super().build_optimizer(total_steps)
    cfg = self.config
    sample = jax.eval_shape(lambda: self.init(jax.random.PRNGKey(0), {
        'view0': jnp.zeros((2, cfg.data.image_size, cfg.data.image_size, 3), jnp.uint8)})[0])
    labels = param_labels(sample, self.param_label)
    used = set(jax.tree_util.tree_leaves(labels))
    if used == {'train'}:
      return tx, lr
    transforms = {'train': tx, 'frozen': optax.set_to_zero()}
    if 'fixed_lr' in used:
      const = cfg.optim.copy_and_resolve_references()
      const.warmup_steps, const.min_lr_ratio = 0, 1.0
      transforms['fixed_lr'] = schedules.build_optimizer(const, cfg.data.batch_size,
                                                         total_steps)[0]
    return optax.multi_transform(transforms, lambda p: param_labels(p, self.param_label)), lr


def param_labels(params, label_fn):
  """A pytree of labels (strings) with the structure of ``params``."""
  return jax.tree_util.tree_map_with_path(lambda path, _: label_fn(jax.tree_util.keystr(path)),
                                          params)
