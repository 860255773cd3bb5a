"""The base ml_collections config every method config extends, and early validation.

Configs are data. ``base_config()`` holds every field the trainer reads, with defaults;
``configs/<method>.py`` files override what they need. ``validate(config)`` runs before anything is
compiled and stops with a message that names the bad field.
"""
from __future__ import annotations

import difflib

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = ml_collections.ConfigDict({'name': 'simclr'})

  c.model = ml_collections.ConfigDict()
  c.model.backbone = 'resnet18'
  c.model.width = 64             # ResNet first-stage width (64 = the paper's)
  c.model.cifar_stem = False     # 3x3/1 stem without max-pool for small images
  c.model.patch_size = 16        # ViT
  c.model.img_size = 224         # ViT: the resolution its position embedding is built for
  c.model.drop_path_rate = 0.0
  c.model.embed_dim = 0          # ViT overrides (0 = preset), for tiny models in tests
  c.model.depth = 0
  c.model.num_heads = 0
  c.model.dtype = 'float32'      # compute dtype: 'float32' | 'bfloat16' (params stay float32)
  c.model.remat = False

  c.data = ml_collections.ConfigDict()
  c.data.source = 'builtin'      # 'builtin'
  c.data.name = 'mnist5k'
  c.data.path = ''
  c.data.train_split = 'train'
  c.data.eval_train_split = 'train'   # kNN memory bank / linear-probe training split
  c.data.eval_split = 'test'
  c.data.image_size = 32
  c.data.crop_scale = (0.08, 1.0)
  c.data.flip = 0.5
  c.data.eval_crop_frac = 1.0
  c.data.batch_size = 256        # global batch, over all devices and processes
  c.data.num_workers = 0         # grain worker processes (0: in-process threads)
  c.data.prefetch = 2

  c.aug = ml_collections.ConfigDict()
  c.aug.recipe = 'simclr'        # a name in augment.RECIPES, or one name per view

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'lars'          # 'lars' | 'adamw' | 'sgd'
  c.optim.lr = 0.3               # base learning rate for a batch of 256 (see lr_scaling)
  c.optim.lr_scaling = 'linear'  # 'linear': lr * batch / 256 | 'sqrt' | 'none'
  c.optim.warmup_steps = 10
  c.optim.min_lr_ratio = 0.0     # cosine decays to lr * min_lr_ratio
  c.optim.weight_decay = 1e-6
  c.optim.momentum = 0.9         # lars / sgd
  c.optim.b1 = 0.9               # adamw
  c.optim.b2 = 0.999
  c.optim.trust_coefficient = 0.001  # lars
  c.optim.clip_grad_norm = 0.0   # 0: off

  c.train = ml_collections.ConfigDict()
  c.train.steps = 100
  c.train.log_every = 10
  c.train.checkpoint_every = 50
  c.train.keep_checkpoints = 3
  c.train.knn_every = 0          # online kNN every N steps (0: off)
  c.train.nan_policy = 'skip'    # 'skip' the update and count it | 'stop' the run
  c.train.progress_bar = True
  c.train.final_eval = True      # kNN of the trained and of a random-init encoder at the end

  c.eval = ml_collections.ConfigDict()
  c.eval.knn_k = 20
  c.eval.knn_temperature = 0.07
  c.eval.batch_size = 500

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (-1,)           # -1: all remaining devices
  c.mesh.axes = ('data',)
  return c


def _require(cond: bool, field: str, msg: str):
  if not cond:
    raise ValueError(f'config.{field}: {msg}')


def _choice(value, field: str, choices):
  if value not in choices:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f' (did you mean {close[0]!r}?)' if close else ''
    raise ValueError(f'config.{field}={value!r} is not valid{hint}; choose one of {list(choices)}')


def validate(config, num_devices: int | None = None):
  """Checks the fields the trainer relies on; raises ValueError naming the first bad field."""
  from ssl_jax import methods, models  # pylint: disable=g-import-not-at-top
  methods.method_class(config.method.name)
  _choice(config.model.backbone, 'model.backbone', models.BACKBONES)
  _choice(config.optim.name, 'optim.name', ('lars', 'adamw', 'sgd'))
  _choice(config.optim.lr_scaling, 'optim.lr_scaling', ('linear', 'sqrt', 'none'))
  _choice(config.train.nan_policy, 'train.nan_policy', ('skip', 'stop'))
  _choice(config.model.dtype, 'model.dtype', ('float32', 'bfloat16'))
  for field in ('data.batch_size', 'data.image_size', 'train.steps', 'train.log_every',
                'train.checkpoint_every', 'train.keep_checkpoints', 'eval.knn_k',
                'eval.batch_size', 'model.width'):
    section, key = field.split('.')
    value = config[section][key]
    _require(isinstance(value, int) and not isinstance(value, bool), field,
             f'must be an integer, got {value!r}')
    _require(value > 0, field, f'must be positive, got {value}')
  _require(config.optim.lr > 0, 'optim.lr', f'must be positive, got {config.optim.lr}')
  _require(config.optim.warmup_steps >= 0, 'optim.warmup_steps', 'must be >= 0')
  _require(config.train.knn_every >= 0, 'train.knn_every', 'must be >= 0')
  lo, hi = config.data.crop_scale
  _require(0 < lo <= hi <= 1, 'data.crop_scale', f'must satisfy 0 < min <= max <= 1, got {(lo, hi)}')
  if config.model.backbone.startswith('vit'):
    _require(config.data.image_size % config.model.patch_size == 0, 'data.image_size',
             f'{config.data.image_size} is not a multiple of model.patch_size='
             f'{config.model.patch_size}')
  if num_devices is not None:
    data_par = num_devices
    _require(config.data.batch_size % data_par == 0, 'data.batch_size',
             f'{config.data.batch_size} is not divisible by the number of devices ({data_par})')
    _require(config.eval.batch_size % data_par == 0, 'eval.batch_size',
             f'{config.eval.batch_size} is not divisible by the number of devices ({data_par})')
  return config
