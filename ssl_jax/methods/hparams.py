"""Typed method hyper-parameters: every ``config.method.*`` field declared once, with its type.

A Method class holds ``Hparams``, a frozen keyword-only dataclass of the fields it reads from
``config.method`` (a field without a default is required: the method's config must set it). A
subclass extends its base's dataclass (``class Hparams(MoCo.Hparams)``), so an inherited field has
one declaration and one default; mixins such as ``common.EMAHparams`` compose the same way.

``parse`` turns the ``config.method`` section into that dataclass when the method is built
(``Method.__init__``, before anything is traced), so that a typo or a wrong type stops the run at
its start with the field named, instead of silently falling back to a default or failing deep in
a trace: an unknown key stops with a "did you mean", a value of the wrong type names the field and
the type. ``name`` (the key into ``methods.METHODS``) is the one key that is not a field.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing


@dataclasses.dataclass(frozen=True, kw_only=True)
class Hparams:
  """No fields: the base of every method's ``Hparams``."""


#: Method fields that became backbone fields (``config.model``), so that fine-tuning and export
#: build exactly the trained backbone: an old config gets the new name instead of a "did you mean".
MOVED_TO_MODEL = {
    'feature_pool': "config.model.pool ('mean' | 'token')",
    'frozen_patch_embed': 'config.model.frozen_patch_embed=True',
    'sincos_pos_embed': "config.model.pos_embed='sincos'",
}


def parse(cls, section, owner: str, prefix: str = 'config.method.'):
  """``cls`` (an Hparams dataclass) from the config section ``section`` (a ConfigDict or dict).

  ``owner`` names the method in messages; every error is a one-line ValueError naming the field.
  """
  values = {k: v for k, v in (section.items() if section is not None else ())
            if not (k == 'name' and prefix == 'config.method.')}
  fields = {f.name: f for f in dataclasses.fields(cls)}
  for key in values:
    if key in MOVED_TO_MODEL and key not in fields and prefix == 'config.method.':
      raise ValueError(f'{prefix}{key} is now a backbone field: remove it and set '
                       f'{MOVED_TO_MODEL[key]} (see configs/)')
    if key not in fields:
      close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
      hint = (f'did you mean {prefix}{close[0]}?' if close
              else f'its fields are {sorted(fields)}')
      raise ValueError(f'{prefix}{key} is not a field of {owner} ({hint})')
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for name, field in fields.items():
    if name in values:
      kwargs[name] = _convert(values[name], hints[name], prefix + name, owner)
    elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
      raise ValueError(f'{prefix}{name} is required by {owner} (it has no default): set it in '
                       'the config')
  return cls(**kwargs)


def _convert(value, tp, field: str, owner: str):
  """``value`` checked against the annotation ``tp`` (lists become tuples, ints floats)."""
  ok, out = _match(value, tp, field, owner)
  if not ok:
    raise ValueError(f'{field}={value!r} ({type(value).__name__}) must be {_describe(tp)}')
  return out


def _match(value, tp, field, owner):
  """(True, converted value) when ``value`` fits ``tp``, else (False, None)."""
  origin, args = typing.get_origin(tp), typing.get_args(tp)
  if tp is typing.Any:
    return True, value
  if origin in (typing.Union, types.UnionType):
    if value is None:
      return type(None) in args, None
    for arg in args:
      if arg is not type(None):
        ok, out = _match(value, arg, field, owner)
        if ok:
          return True, out
    return False, None
  if dataclasses.is_dataclass(tp):
    if isinstance(value, tp):
      return True, value
    if hasattr(value, 'items'):
      return True, parse(tp, value, owner, prefix=field + '.')
    return False, None
  if origin is tuple:
    if not isinstance(value, (tuple, list)):
      return False, None
    items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
    if len(items) != len(value):
      return False, None
    out = []
    for i, (item, arg) in enumerate(zip(value, items)):
      ok, conv = _match(item, arg, f'{field}[{i}]', owner)
      if not ok:
        return False, None
      out.append(conv)
    return True, tuple(out)
  if tp is bool:
    return isinstance(value, bool), value
  if tp is int:
    return isinstance(value, int) and not isinstance(value, bool), value
  if tp is float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return ok, float(value) if ok else None
  if tp is str:
    return isinstance(value, str), value
  raise TypeError(f'{field}: unsupported Hparams annotation {tp!r} in {owner}')


def _describe(tp) -> str:
  origin, args = typing.get_origin(tp), typing.get_args(tp)
  if origin in (typing.Union, types.UnionType):
    return ' or '.join('None' if a is type(None) else _describe(a) for a in args)
  if origin is tuple:
    if len(args) == 2 and args[1] is Ellipsis:
      return f'a tuple of {_describe(args[0])}'
    return f'a tuple of {len(args)} ({", ".join(_describe(a) for a in args)})'
  if dataclasses.is_dataclass(tp):
    return f'a section with the fields {[f.name for f in dataclasses.fields(tp)]}'
  return {bool: 'a bool (True or False)', int: 'an int', float: 'a number', str: 'a string'}.get(
      tp, repr(tp))
