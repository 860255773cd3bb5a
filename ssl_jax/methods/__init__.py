"""Methods by short key: the one explicit dict that ``config.method.name`` maps through.

Values are ``module:Class`` paths imported on use, so importing ssl_jax imports no method and no
registry is filled by import side effects.
"""
from __future__ import annotations

import difflib
import importlib

METHODS = {
    'simclr': 'ssl_jax.methods.contrastive.simclr:SimCLR',
}


def method_class(name: str):
  """The Method class for ``name``; unknown names raise ValueError with a suggestion."""
  if name not in METHODS:
    close = difflib.get_close_matches(name, METHODS, n=1)
    hint = f' (did you mean {close[0]!r}?)' if close else ''
    raise ValueError(f'config.method.name={name!r} is not a known method{hint}; '
                     f'choose one of {sorted(METHODS)}')
  module, cls = METHODS[name].split(':')
  return getattr(importlib.import_module(module), cls)


def build_method(config):
  return method_class(config.method.name)(config)
