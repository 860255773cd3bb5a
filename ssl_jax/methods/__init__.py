"""Methods by short key: the one explicit dict that ``config.method.name`` maps through.

Values are ``module:Class`` paths imported on use, so importing ssl_jax imports no method and no
registry is filled by import side effects (``config.validate`` checks the name with
``check_name`` alone; a method's ``config.method`` fields are checked when it is built).
A user's own method joins with one explicit call,
``register_method(name, cls)`` (also ``ssl_jax.register_method``), whose value is the class.
"""
from __future__ import annotations

import difflib
import importlib

from ssl_jax.methods import hparams

METHODS = {
    'simclr': 'ssl_jax.methods.contrastive.simclr:SimCLR',
    'dino': 'ssl_jax.methods.distillation.dino:DINO',
    'ibot': 'ssl_jax.methods.distillation.ibot:IBOT',
    'dinov2': 'ssl_jax.methods.distillation.dinov2:DINOv2',
    'data2vec': 'ssl_jax.methods.distillation.data2vec:Data2Vec',
    'mae': 'ssl_jax.methods.masked.mae:MAE',
    'simmim': 'ssl_jax.methods.masked.simmim:SimMIM',
    'vqvae': 'ssl_jax.methods.masked.vq_tokenizer:VQTokenizer',
    'beit': 'ssl_jax.methods.masked.beit:BEiT',
    'multimae': 'ssl_jax.methods.masked.multimae:MultiMAE',
    'moco': 'ssl_jax.methods.contrastive.moco:MoCo',
    'mocov3': 'ssl_jax.methods.contrastive.moco:MoCoV3',
    'byol': 'ssl_jax.methods.contrastive.byol:BYOL',
    'simsiam': 'ssl_jax.methods.contrastive.simsiam:SimSiam',
    'nnclr': 'ssl_jax.methods.contrastive.nnclr:NNCLR',
    'barlow_twins': 'ssl_jax.methods.contrastive.barlow_twins:BarlowTwins',
    'vicreg': 'ssl_jax.methods.contrastive.vicreg:VICReg',
    'swav': 'ssl_jax.methods.contrastive.swav:SwAV',
    'instdis': 'ssl_jax.methods.contrastive.instdis:InstDis',
    'cpc': 'ssl_jax.methods.contrastive.cpc:CPC',
    'cmc': 'ssl_jax.methods.contrastive.cmc:CMC',
    'rotation': 'ssl_jax.methods.pretext.rotation:RotNet',
    'jigsaw': 'ssl_jax.methods.pretext.jigsaw:Jigsaw',
    'sit': 'ssl_jax.methods.hybrid.sit:SiT',
    'cmae': 'ssl_jax.methods.hybrid.cmae:CMAE',
    'cutpaste': 'ssl_jax.methods.pretext.cutpaste:CutPaste',
    'colorization': 'ssl_jax.methods.pretext.colorization:Colorization',
    'pirl': 'ssl_jax.methods.pretext.pirl:PIRL',
    'ijepa': 'ssl_jax.methods.jepa.ijepa:IJEPA',
    'lejepa': 'ssl_jax.methods.jepa.lejepa:LeJEPA',
    'msn': 'ssl_jax.methods.distillation.msn:MSN',
    'data2vec_audio': 'ssl_jax.methods.speech.data2vec_audio:Data2VecAudio',
    'wav2vec2': 'ssl_jax.methods.speech.wav2vec2:Wav2Vec2',
    'hubert': 'ssl_jax.methods.speech.hubert:HuBERT',
}

_BUILTIN_METHODS = dict(METHODS)


def check_name(name: str):
  """Raises ValueError with a suggestion when ``name`` is not a key of METHODS (imports nothing)."""
  if name not in METHODS:
    close = difflib.get_close_matches(name, METHODS, n=1)
    hint = f' (did you mean {close[0]!r}?)' if close else ''
    raise ValueError(f'config.method.name={name!r} is not a known method{hint}; '
                     f'choose one of {sorted(METHODS)}')


def method_class(name: str):
  """The Method class for ``name``; unknown names raise ValueError with a suggestion."""
  check_name(name)
  if not isinstance(METHODS[name], str):   # a class given to register_method
    return METHODS[name]
  module, cls = METHODS[name].split(':')
  return getattr(importlib.import_module(module), cls)


def method_hparams(config):
  """``config.method`` parsed into the method's typed ``Hparams`` (see ``methods/hparams.py``):
  imports the method's module, builds nothing. ``build_method`` does the same check first."""
  return hparams.parse(method_class(config.method.name).Hparams, config.method,
                       config.method.name)


def register_method(name: str, method_class) -> None:
  """Makes ``config.method.name=name`` build ``method_class(config)``: a class implementing the
  Method interface (subclass ``ssl_jax.methods.base.Method``). Built-in names are refused;
  registering a user name again replaces it."""
  if name in _BUILTIN_METHODS:
    raise ValueError(f'method {name!r} is built in; register your method under another name')
  if not isinstance(method_class, type):
    raise TypeError(f'register_method({name!r}, ...) needs a class, got '
                    f'{type(method_class).__name__}')
  METHODS[name] = method_class


def build_method(config):
  """The method for ``config``, its crop sizes checked against the backbone (see below).

  ``Method.__init__`` parses ``config.method`` into ``method.hp`` before anything else, so an
  unknown, misspelled or mistyped method field stops here, at the start of a run."""
  cls = method_class(config.method.name)
  data_modality = config.data.get('modality', 'image')
  if getattr(cls, 'modality', 'image') != data_modality:
    raise ValueError(f'config.method.name={config.method.name!r} reads {cls.modality} but '
                     f'config.data.modality={data_modality!r}; use the method\'s own config '
                     f'(configs/{config.method.name}.py) or set data.modality and an '
                     f'{cls.modality} data set')
  method = cls(config)
  check_crop_sizes(method)
  return method


def check_crop_sizes(method):
  """Backbones that take only some input sizes (a Swin's patch mergings need even maps) get
  every crop of the method checked up front, so that a multi-crop method's local crops fail here
  with the crop named rather than at trace time."""
  check = getattr(getattr(method, 'backbone', None), 'check_image_size', None)
  if check is None or method.modality != 'image':
    return
  for spec in method.crop_specs():
    try:
      check(spec.size)
    except ValueError as e:
      raise ValueError(f'config.model.backbone={method.config.model.backbone!r} cannot take '
                       f'{type(method).__name__}\'s {spec.name!r} crops of {spec.size} px '
                       f'(data.image_size or the method\'s crop-size field): {e}') from None
