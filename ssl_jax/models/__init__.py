"""Backbones by short name: the one explicit dict a config's ``model.backbone`` maps through.

A user's own flax backbone joins with one explicit call (no import side effects)::

    ssl_jax.register_backbone('mynet', lambda model_cfg: MyNet(width=model_cfg.width),
                              feature_dim=lambda model_cfg: 8 * model_cfg.width)

after which ``config.model.backbone='mynet'`` trains, evaluates, fine-tunes and exports it.
"""
from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp

from ssl_jax.models import resnet

RESNETS = {'resnet18': resnet.resnet18, 'resnet50': resnet.resnet50}
VITS = ('vit_tiny', 'vit_small', 'vit_base', 'vit_large', 'vit_giant')
SWINS = ('swin_tiny', 'swin_small', 'swin_base')
# Speech encoders (wav2vec 2.0 / HuBERT / data2vec-audio): (B, L) waveforms, not images.
AUDIOS = ('wav2vec2_base', 'wav2vec2_large', 'audio_tiny')
BACKBONES = tuple(RESNETS) + VITS + SWINS + AUDIOS
# name -> (factory(model_cfg) -> flax module, feature_dim: int | callable(model_cfg) | None)
_REGISTERED: dict[str, tuple[Callable[[Any], Any], Any]] = {}

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def build_backbone(model_cfg):
  """Builds the backbone named by ``model_cfg.backbone`` (a flax module with ``feature_dim``).

  This is the one place a backbone is defined: methods, fine-tuning and export all build it from
  ``config.model``, so a method that needs a different backbone (SiT's two prefix tokens, MoCo
  v3's frozen patch embedding) says so in its config and checks it, never edits the module.

  ResNets read ``width``, ``cifar_stem``, ``conv_impl`` and optional ``stage_sizes`` (blocks per
  stage, for tiny test models); ViTs read ``patch_size``, ``img_size``,
  ``drop_path_rate``, ``pos_embed`` ('learned' default | 'sincos'), ``num_prefix_tokens``
  ([CLS] + extra prefix / register tokens), ``frozen_patch_embed``, ``pool`` / ``pool_token``
  (the pooled feature), ``num_registers`` (register tokens, never pooled), ``layerscale_init``
  (0 = no LayerScale), ``mlp`` ('gelu' | 'swiglu'), ``qk_norm``, ``rope`` (2-D axial RoPE),
  ``pos_embed_antialias`` (timm's position-embedding resampling) and
  optional overrides
  ``embed_dim``/``depth``/``num_heads`` (for tiny test models); Swins read ``patch_size``,
  ``window_size``, ``drop_path_rate`` and optional overrides ``embed_dim``, ``swin_depths``
  (blocks per stage) and ``swin_heads`` (heads per stage). Unknown names raise ValueError naming
  the field. Audio encoders (:data:`AUDIOS`, ``models/audio.py``; input (B, L) waveforms) read
  ``conv_dim`` (every conv layer's width), ``conv_mode`` ('group_norm' | 'layer_norm'),
  ``conv_impl`` ('xla' | 'im2col'; 'auto' = XLA's), ``pos_conv_kernel``, ``pos_conv_groups``,
  ``layer_norm_first``, ``feature_grad_mult`` (1.0 when absent), the dropouts (``dropout``,
  ``attention_dropout``, ``activation_dropout``, ``dropout_input``; 0 when absent) and the
  ``embed_dim``/``depth``/``num_heads`` overrides; a field that is absent, 0, '' or None keeps
  the preset's value.
  """
  name = model_cfg.backbone
  dtype = _DTYPES[model_cfg.get('dtype', 'float32')]
  if name in _REGISTERED:
    return _REGISTERED[name][0](model_cfg)
  if name not in VITS:
    for field, default in _VIT_ONLY.items():
      if model_cfg.get(field, default) != default:
        raise ValueError(f'config.model.{field}={model_cfg[field]!r} needs a ViT backbone, got '
                         f'config.model.backbone={name!r}: this config is set up for a ViT (use '
                         f'a vit_* backbone) or set model.{field}={default!r}')
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
                   pos_embed=model_cfg.get('pos_embed', 'learned'),
                   num_prefix_tokens=model_cfg.get('num_prefix_tokens', 1),
                   frozen_patch_embed=model_cfg.get('frozen_patch_embed', False),
                   pool=model_cfg.get('pool', 'token'),
                   pool_token=model_cfg.get('pool_token', 0),
                   num_registers=model_cfg.get('num_registers', 0),
                   layerscale_init=model_cfg.get('layerscale_init', 0.0),
                   mlp=model_cfg.get('mlp', 'gelu'), qk_norm=model_cfg.get('qk_norm', False),
                   rope=model_cfg.get('rope', False),
                   pos_embed_antialias=model_cfg.get('pos_embed_antialias', False), dtype=dtype,
                   bf16_dots=model_cfg.get('cpu_dots', 'auto') == 'bf16', **kw)
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
  if name in AUDIOS:
    return _build_audio(name, model_cfg, dtype)
  raise ValueError(f'config.model.backbone={name!r} is not a known backbone; '
                   f'choose one of {list(BACKBONES)}')


def _build_audio(name: str, model_cfg, dtype):
  """The :data:`AUDIOS` preset ``name`` with ``model_cfg``'s overrides (set = not absent, 0, ''
  or None)."""
  from ssl_jax.models import audio  # pylint: disable=g-import-not-at-top
  kw = dict(audio.AUDIO_PRESETS[name])
  if model_cfg.get('conv_dim', 0):
    kw['conv_layers'] = tuple((int(model_cfg.conv_dim), k, s) for _, k, s in kw['conv_layers'])
  for field in ('embed_dim', 'depth', 'num_heads', 'conv_mode', 'pos_conv_kernel',
                'pos_conv_groups'):
    if model_cfg.get(field, None):
      kw[field] = model_cfg[field]
  if model_cfg.get('layer_norm_first', '') in (True, False):   # '' / None: the preset's
    kw['layer_norm_first'] = bool(model_cfg.layer_norm_first)
  for field in ('feature_grad_mult', 'dropout', 'attention_dropout', 'activation_dropout',
                'dropout_input'):
    if model_cfg.get(field, None) is not None:
      kw[field] = float(model_cfg[field])
  if kw['conv_mode'] not in audio.CONV_MODES:
    raise ValueError(f'config.model.conv_mode={kw["conv_mode"]!r} must be one of '
                     f'{audio.CONV_MODES}')
  impl = model_cfg.get('conv_impl', 'auto') or 'auto'
  if impl not in audio.CONV_IMPLS:
    raise ValueError(f'config.model.conv_impl={impl!r}: an audio backbone takes one of '
                     f'{audio.CONV_IMPLS}')
  return audio.AudioEncoder(conv_impl=impl, dtype=dtype, **kw)


def is_audio_backbone(name: str) -> bool:
  """Whether backbone ``name`` is a built-in speech encoder (takes (B, L) waveforms)."""
  return name in AUDIOS


# ViT-only model fields and their defaults: another backbone given a non-default value is an error
# rather than a silently ignored setting.
_VIT_ONLY = {'num_prefix_tokens': 1, 'pos_embed': 'learned', 'frozen_patch_embed': False,
             'pool': 'token', 'pool_token': 0, 'num_registers': 0, 'layerscale_init': 0.0,
             'mlp': 'gelu', 'qk_norm': False, 'rope': False, 'pos_embed_antialias': False}


def register_backbone(name: str, factory: Callable[[Any], Any], *, feature_dim=None):
  """Makes ``config.model.backbone=name`` build ``factory(config.model)`` (a flax module taking
  NHWC images and ``train=``, returning (B, D) pooled features). ``feature_dim`` is D, an int or
  a function of ``config.model``; leave it None when the module has a ``feature_dim``
  attribute. Registering a built-in name is refused; registering a name again replaces it."""
  global BACKBONES
  if name in RESNETS or name in VITS or name in SWINS or name in AUDIOS:
    raise ValueError(f'backbone {name!r} is built in; register your backbone under another name')
  if not callable(factory):
    raise TypeError(f'register_backbone({name!r}, factory): factory must be callable, got '
                    f'{type(factory).__name__}')
  _REGISTERED[name] = (factory, feature_dim)
  BACKBONES = tuple(RESNETS) + VITS + SWINS + AUDIOS + tuple(_REGISTERED)


def registered_backbone(name: str):
  """(factory, feature_dim) of a backbone added with :func:`register_backbone`, or None."""
  return _REGISTERED.get(name)


def feature_dim(backbone, model_cfg=None) -> int:
  """Width of the pooled feature the backbone returns (a registered backbone's ``feature_dim``
  when ``model_cfg`` names one that declared it)."""
  if hasattr(backbone, 'feature_dim'):
    return backbone.feature_dim
  if model_cfg is not None and model_cfg.get('backbone') in _REGISTERED:
    dim = _REGISTERED[model_cfg.backbone][1]
    if dim is not None:
      return int(dim(model_cfg) if callable(dim) else dim)
  if hasattr(backbone, 'embed_dim'):
    return backbone.embed_dim
  raise ValueError(f'cannot tell the feature width of {type(backbone).__name__}; give '
                   'register_backbone(..., feature_dim=D) or a feature_dim attribute')
