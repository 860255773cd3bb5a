"""The one EMA teacher (momentum encoder, target network) of BYOL, MoCo v1/v2/v3, DINO, iBOT,
data2vec, CMAE and I-JEPA: one buffer layout, one update, one schedule rule.

Layout. The teacher lives under one key of the method's buffers, ``buffers['teacher']``::

    {'params': {name: EMA of params[name], ...},          # e.g. 'backbone', 'projector', 'head'
     'batch_stats': {name: the teacher's own statistics}}  # only the modules with BatchNorm

``params`` mirrors the student's subtrees of the same names. ``batch_stats`` holds the running
statistics of the teacher's BatchNorm layers, present only for modules that have any (the key is
absent for an all-ViT teacher). The statistics are *not* averaged: the teacher runs its
BatchNorm in training mode on its own input (what the loss sees) and keeps its own running
averages from those passes, as MoCo's ``encoder_k`` buffers and DINO's teacher do (the
references EMA ``parameters()`` only).

Update. After each optimizer step, ``params <- m params + (1 - m) student`` (BYOL Eq. 1, MoCo
Eq. 2, DINO Sec. 3.1), with m the momentum of the step whose update just happened
(``update``).

Schedule. ``momentum_schedule``: cosine from ``momentum`` to ``momentum_final`` over training
(BYOL, DINO, iBOT, MoCo v3), constant where they are equal (MoCo v1/v2, CMAE's official configs),
or linear over ``anneal_steps`` and then constant (data2vec, as its paper and fairseq do).
"""
from __future__ import annotations

import dataclasses

import jax

from ssl_jax import optim as schedules

#: The buffers key of the teacher.
KEY = 'teacher'


@dataclasses.dataclass(frozen=True, kw_only=True)
class EMAHparams:
  """``config.method`` fields of an EMA teacher on ``momentum_schedule``."""
  momentum: float = 0.996
  momentum_final: float = 1.0


def ema_update(target, online, momentum):
  """target <- m * target + (1 - m) * online, leaf-wise (BYOL Eq. 1, MoCo Eq. 2, DINO Sec. 3.1).

  ``momentum`` may be a traced scalar (a schedule of the step), so the update runs inside the
  compiled step. Written as ``t + (1 - m) (o - t)``: the same value, but exact where online equals
  target (frozen parameters stay bit-identical in the target) and at m = 1.
  """
  return jax.tree_util.tree_map(lambda t, o: t + (1.0 - momentum) * (o - t), target, online)


def momentum_schedule(hp, total_steps: int, shape: str = 'cosine'):
  """EMA momentum as a pure function of the step, from ``hp.momentum`` to ``hp.momentum_final``
  over ``total_steps``, then constant (``hp`` holds ``EMAHparams``' fields).

  ``shape='cosine'``: tau_k = final - (final - base) (cos(pi k / K) + 1) / 2 (BYOL, DINO);
  ``'linear'``: base + (final - base) k / K (data2vec; fairseq's ``get_annealed_rate``). Either is
  constant when base equals final (MoCo).
  """
  if shape == 'cosine':
    return schedules.cosine_increase(hp.momentum, hp.momentum_final, total_steps)
  if shape == 'linear':
    return schedules.linear_warmup_constant(hp.momentum, hp.momentum_final, total_steps)
  raise ValueError(f"momentum schedule shape={shape!r}: use 'cosine' or 'linear'")


def _nonempty(stats) -> dict:
  return {name: s for name, s in (stats or {}).items() if s}


def from_student(params, names, stats=None) -> dict:
  """A teacher equal to the student: ``params[name]`` for each of ``names`` and, for those with
  BatchNorm, their statistics ``stats[name]`` (the teacher keeps its own from then on)."""
  teacher = {'params': {name: params[name] for name in names}}
  own = _nonempty({name: (stats or {}).get(name) for name in names})
  if own:
    teacher['batch_stats'] = own
  return teacher


def stats_of(teacher, name: str) -> dict:
  """The teacher's BatchNorm statistics of module ``name`` ({} when it has none)."""
  return teacher.get('batch_stats', {}).get(name, {})


def with_stats(teacher, **stats) -> dict:
  """``teacher`` with the statistics of the named modules replaced (those without BatchNorm,
  given as {}, are left out, so the tree keeps the layout of ``from_student``)."""
  new = dict(teacher.get('batch_stats', {}), **_nonempty(stats))
  return dict(teacher, batch_stats=new) if new else teacher


def update(state, momentum_fn, step_offset: int = 0):
  """``state`` with ``buffers['teacher']['params']`` moved towards the student's params of the
  same names by ``ema_update``, at momentum ``momentum_fn(step of the update just made +
  step_offset)``.

  Called from ``after_update``: ``apply_gradients`` has already advanced ``state.step``, so the
  update just made is ``step - 1`` (BYOL's code: the tau of that step). MoCo v3 passes
  ``step_offset=1``: its code updates the key encoder at the start of iteration t+1 with m(t+1),
  the same arithmetic done one call earlier.
  """
  m = momentum_fn(state.step - 1 + step_offset)
  teacher = state.buffers[KEY]
  student = {name: state.params[name] for name in teacher['params']}
  teacher = dict(teacher, params=ema_update(teacher['params'], student, m))
  return state.replace(buffers=dict(state.buffers, **{KEY: teacher}))
