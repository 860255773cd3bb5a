"""What exists: methods, configs and their variants, backbones, datasets (``--list``).

Read from the places that define them (``methods.METHODS``, ``models.BACKBONES``,
``data.sources.BUILTIN``, the ``configs/`` package), so the listing cannot drift from the code.
A config's variants are the names its ``get_config`` accepts: the ones its unknown-variant error
names (``configs/_common.unknown_variant``); tests/test_catalog.py loads every one of them.
"""
from __future__ import annotations

import importlib
import pkgutil
import re


def config_modules() -> list[str]:
  """Names of the method configs, ``configs/<name>.py`` without the private ``_common``."""
  import configs  # pylint: disable=g-import-not-at-top
  return sorted(m.name for m in pkgutil.iter_modules(configs.__path__) if not m.name.startswith('_'))


def config_variants(name: str) -> tuple[list[str], str]:
  """(variants, backbone suffix note) of ``configs/<name>.py`` from its unknown-variant error."""
  module = importlib.import_module(f'configs.{name}')
  try:
    module.get_config('__list__')
  except ValueError as e:
    message = str(e)
  else:  # pragma: no cover - every config refuses an unknown variant
    return [], ''
  choices = message.partition('; use ')[2]
  note = re.search(r'\(optionally .*\)$', choices)
  if note:
    choices = choices[:note.start()]
  return re.findall(r"'(\w+)'", choices), note.group(0) if note else ''


def catalog() -> dict:
  """{'methods', 'configs': {name: {'variants', 'backbones'}}, 'backbones', 'datasets'}."""
  from ssl_jax import methods, models  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  configs = {}
  for name in config_modules():
    variants, note = config_variants(name)
    own_data = hasattr(importlib.import_module(f'configs.{name}'), 'folder_config')
    configs[name] = {'variants': variants, 'backbones': note, 'folder': own_data}
  return {
      'methods': sorted(methods.METHODS),
      'configs': configs,
      'backbones': sorted(models.BACKBONES),
      'datasets': [f'builtin: {", ".join(sources.BUILTIN)}',
                   'tfds: any TFDS dataset prepared as ArrayRecord (data.name, data.data_dir)',
                   'folder: your images, root/train/<class>/*.jpg or a flat folder (data.path)'],
  }


def format_catalog(cat: dict) -> str:
  lines = ['methods (config.method.name):', '  ' + ', '.join(cat['methods']), '',
           'configs (--config=configs/NAME.py:VARIANT[,BACKBONE], e.g. simclr.py:builtin,vit_small):']
  width = max(len(n) for n in cat['configs'])
  for name, info in cat['configs'].items():
    note = f"  {info['backbones']}" if info['backbones'] else ''
    variants = info['variants'] + (['folder,PATH[,MINUTES]'] if info.get('folder') else [])
    lines.append(f"  {name:<{width}}  {', '.join(variants)}{note}")
  lines += ['', 'backbones (config.model.backbone):', '  ' + ', '.join(cat['backbones']), '',
            'datasets (config.data.source):'] + [f'  {d}' for d in cat['datasets']]
  return '\n'.join(lines)
