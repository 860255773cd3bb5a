"""Optimizers, schedules and weight-decay masks: the layer under methods/, train/ and eval/.

Schedules are pure functions of the step (learning rate, EMA momentum, teacher temperature);
``build_optimizer`` turns ``config.optim`` into an optax transformation; ``decay_mask`` picks the
parameters that get weight decay. Moved from train/schedules.py so that methods and evaluators
build optimizers without importing the trainer (docs/architecture.md).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def scaled_lr(optim_cfg, batch_size: int) -> float:
  """Base lr scaled by batch size: linear (Goyal et al. 2017; SimCLR), sqrt, or none."""
  if optim_cfg.lr_scaling == 'linear':
    return optim_cfg.lr * batch_size / 256
  if optim_cfg.lr_scaling == 'sqrt':
    return optim_cfg.lr * (batch_size / 256) ** 0.5
  return optim_cfg.lr


def warmup_cosine(peak: float, warmup_steps: int, total_steps: int, end_value: float = 0.0):
  """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then cosine decay to ``end_value``."""
  warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, max(total_steps, 1),
                                            end_value)


def cosine_increase(base: float, final: float, total_steps: int):
  """BYOL's momentum schedule: tau_k = final - (final - base) (cos(pi k / K) + 1) / 2."""
  def fn(step):
    frac = jnp.clip(step / max(total_steps, 1), 0.0, 1.0)
    return final - (final - base) * (jnp.cos(jnp.pi * frac) + 1) / 2
  return fn


def linear_warmup_constant(start: float, end: float, warmup_steps: int):
  """Linear from ``start`` to ``end`` over ``warmup_steps`` then constant (DINO teacher temp)."""
  def fn(step):
    frac = jnp.clip(step / max(warmup_steps, 1), 0.0, 1.0)
    return start + (end - start) * frac
  return fn


# 2-D parameters that are not weights: Swin's relative position bias (every Swin codebase keeps
# it out of weight decay, ``no_weight_decay_keywords``).
NO_DECAY_NAMES = ('relative_position_bias_table',)


def decay_mask(params):
  """True for weights (ndim > 1) that get weight decay / LARS adaptation; biases, norms and the
  ``NO_DECAY_NAMES`` tables not."""
  def keep(path, p):
    return p.ndim > 1 and not any(getattr(k, 'key', None) in NO_DECAY_NAMES for k in path)
  return jax.tree_util.tree_map_with_path(keep, params)


def build_optimizer(optim_cfg, batch_size: int, total_steps: int):
  """(optax transformation, lr schedule) from ``config.optim``.

  * ``lars``: LARS (You et al. 2017) with momentum, as SimCLR/BYOL; biases and norm parameters are
    excluded from weight decay and from the trust ratio.
  * ``adamw``: AdamW (Loshchilov & Hutter 2019), decay masked the same way.
  * ``sgd``: SGD with momentum and decoupled-free L2 via add_decayed_weights.
  """
  peak = scaled_lr(optim_cfg, batch_size)
  lr = warmup_cosine(peak, optim_cfg.warmup_steps, total_steps, peak * optim_cfg.min_lr_ratio)
  if optim_cfg.name == 'lars':
    tx = optax.lars(lr, weight_decay=optim_cfg.weight_decay, weight_decay_mask=decay_mask,
                    trust_coefficient=optim_cfg.trust_coefficient, trust_ratio_mask=decay_mask,
                    momentum=optim_cfg.momentum)
  elif optim_cfg.name == 'adamw':
    tx = optax.adamw(lr, b1=optim_cfg.b1, b2=optim_cfg.b2, weight_decay=optim_cfg.weight_decay,
                     mask=decay_mask)
  elif optim_cfg.name == 'sgd':
    tx = optax.chain(optax.add_decayed_weights(optim_cfg.weight_decay, mask=decay_mask),
                     optax.sgd(lr, momentum=optim_cfg.momentum))
  else:
    raise ValueError(f'config.optim.name={optim_cfg.name!r} is not valid')
  if optim_cfg.clip_grad_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(optim_cfg.clip_grad_norm), tx)
  return tx, lr
