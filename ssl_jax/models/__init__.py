"""Backbones by short name: the one explicit dict a config's ``model.backbone`` maps through."""
from __future__ import annotations

import jax.numpy as jnp

from ssl_jax.models import resnet

RESNETS = {'resnet18': resnet.resnet18, 'resnet50': resnet.resnet50}
VITS = ('vit_tiny', 'vit_small', 'vit_base')
SWINS = ('swin_tiny', 'swin_small', 'swin_base')
BACKBONES = tuple(RESNETS) + VITS + SWINS

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def build_backbone(model_cfg):
  """Builds the backbone named by ``model_cfg.backbone`` (a flax module with ``feature_dim``).

  ResNets read ``width``, ``cifar_stem``, ``conv_impl`` and optional ``stage_sizes`` (blocks per
  stage, for tiny test models); ViTs read ``patch_size``, ``img_size``,
  ``drop_path_rate``, ``pos_embed`` ('learned' default | 'sincos') and optional overrides
  ``embed_dim``/``depth``/``num_heads`` (for tiny test models); Swins read ``patch_size``,
  ``window_size``, ``drop_path_rate`` and optional overrides ``embed_dim``, ``swin_depths``
  (blocks per stage) and ``swin_heads`` (heads per stage). Unknown names raise ValueError naming
  the field.
  """
  name = model_cfg.backbone
  dtype = _DTYPES[model_cfg.get('dtype', 'float32')]
  if name in RESNETS:
    kw = {}
    if model_cfg.get('stage_sizes', ()):
      kw['stage_sizes'] = tuple(int(n) for n in model_cfg.stage_sizes)
    return RESNETS[name](width=model_cfg.get('width', 64),
                         cifar_stem=model_cfg.get('cifar_stem', False), dtype=dtype,
                         conv_impl=model_cfg.get('conv_impl', 'auto'), **kw)
  if name in VITS:
    from ssl_jax.models import vit  # pylint: disable=g-import-not-at-top
    kw = dict(vit.VIT_PRESETS[name])
    for key in ('embed_dim', 'depth', 'num_heads'):
      if model_cfg.get(key, None):
        kw[key] = model_cfg[key]
    return vit.ViT(img_size=model_cfg.get('img_size', 224),
                   patch_size=model_cfg.get('patch_size', 16),
                   drop_path_rate=model_cfg.get('drop_path_rate', 0.0),
                   remat=model_cfg.get('remat', False),
                   pos_embed=model_cfg.get('pos_embed', 'learned'), dtype=dtype, **kw)
  if name in SWINS:
    from ssl_jax.models import swin  # pylint: disable=g-import-not-at-top
    kw = dict(swin.SWIN_PRESETS[name])
    if model_cfg.get('embed_dim', 0):
      kw['embed_dim'] = model_cfg.embed_dim
    for key, field in (('depths', 'swin_depths'), ('num_heads', 'swin_heads')):
      if model_cfg.get(field, ()):
        kw[key] = tuple(int(n) for n in model_cfg[field])
    return swin.Swin(img_size=model_cfg.get('img_size', 224),
                     patch_size=model_cfg.get('patch_size', 4),
                     window_size=model_cfg.get('window_size', 7),
                     drop_path_rate=model_cfg.get('drop_path_rate', 0.0), dtype=dtype, **kw)
  raise ValueError(f'config.model.backbone={name!r} is not a known backbone; '
                   f'choose one of {list(BACKBONES)}')


def feature_dim(backbone) -> int:
  """Width of the pooled feature the backbone returns."""
  if hasattr(backbone, 'feature_dim'):
    return backbone.feature_dim
  return backbone.embed_dim
