"""The base ml_collections config every method config extends, and early validation.

Configs are data. ``base_config()`` holds every field the trainer reads, with defaults;
``configs/<method>.py`` files override what they need. ``validate(config)`` runs before anything is
compiled and stops with a message that names the bad field.
"""
from __future__ import annotations

import difflib
import math

import ml_collections


CPU_DOTS = ('auto', 'xla', 'eigen', 'bf16')


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = ml_collections.ConfigDict({'name': 'simclr'})

  c.model = ml_collections.ConfigDict()
  c.model.backbone = 'resnet18'
  c.model.width = 64             # ResNet first-stage width (64 = the paper's)
  c.model.cifar_stem = False     # 3x3/1 stem without max-pool for small images
  c.model.conv_impl = 'auto'     # ResNet: 'auto' (CPU: Winograd/im2col) | 'im2col' | 'winograd' | 'xla'
  # XLA:CPU dots, set by `python -m ssl_jax.main` before JAX starts: 'auto' (Eigen for ViT
  # backbones, XLA's default YNNPACK fusions otherwise) | 'xla' | 'eigen' (ssl_jax/runtime.py) |
  # 'bf16': XLA's YNNPACK fusions and the ViT's Dense matmuls with bf16 operands, float32
  # accumulation (CPUs with AMX / AVX512-BF16; models/cpu/bf16_dot.py)
  c.model.cpu_dots = 'auto'
  c.model.patch_size = 16        # ViT
  c.model.img_size = 224         # ViT: the resolution its position embedding is built for
  c.model.drop_path_rate = 0.0
  c.model.embed_dim = 0          # ViT overrides (0 = preset), for tiny models in tests
  c.model.depth = 0
  c.model.num_heads = 0
  # ViT fields a method may need changed; the method's config sets them and the method checks
  # them, so fine-tuning / export / load_encoder build exactly the trained backbone (issue 29).
  c.model.pos_embed = 'learned'      # ViT: 'learned' | 'sincos' (fixed 2-D; MAE, MoCo v3)
  c.model.num_prefix_tokens = 1      # ViT: [CLS] + extra prefix / register tokens (SiT: 2)
  c.model.frozen_patch_embed = False  # ViT: random, frozen patch projection (MoCo v3)
  c.model.pool = 'token'             # ViT pooled feature: 'token' (prefix token pool_token) | 'mean'
  c.model.pool_token = 0             # ViT: which prefix token 'token' pools (SiT: 1, contrastive)
  # Modern-ViT parts (issue 32; ssl_jax/models/vit.py); the defaults leave every model unchanged.
  c.model.num_registers = 0          # ViT register tokens (Darcet et al. 2024; DINOv2-reg: 4)
  c.model.layerscale_init = 0.0      # ViT LayerScale initial gamma (0 = off; DINOv2: 1e-5)
  c.model.mlp = 'gelu'               # ViT FFN: 'gelu' | 'swiglu' (DINOv2 ViT-g)
  c.model.qk_norm = False            # ViT per-head LayerNorm of queries and keys
  c.model.rope = False               # ViT 2-D axial RoPE on patch tokens (with pos_embed or 'none')
  # ViT pos_embed resampling at a resolution other than img_size: False = bicubic (as before),
  # True = timm's anti-aliased bicubic (DINOv2's 518 px table used at 224 px)
  c.model.pos_embed_antialias = False
  c.model.window_size = 7         # Swin attention window (tokens per side)
  c.model.swin_depths = ()       # Swin overrides (() = preset): blocks per stage, e.g. (2, 2, 2)
  c.model.swin_heads = ()        # Swin overrides: heads per stage, same length as swin_depths
  c.model.stage_sizes = ()       # ResNet override of blocks per stage (() = preset), e.g. (1, 1, 1, 1)
  # Speech encoders (models/audio.py: audio_tiny, wav2vec2_base, wav2vec2_large); 0 / '' = the
  # preset's value.
  c.model.conv_dim = 0           # width of every conv feature-encoder layer
  c.model.conv_mode = ''         # 'group_norm' (BASE) | 'layer_norm' (LARGE)
  c.model.pos_conv_kernel = 0    # positional conv kernel (frames) and groups
  c.model.pos_conv_groups = 0
  c.model.layer_norm_first = ''  # '' preset | True pre-LN blocks | False post-LN
  c.model.feature_grad_mult = 1.0    # gradient scale into the conv encoder (wav2vec 2.0: 0.1)
  c.model.dropout = 0.0          # transformer dropout / attention / FFN activation / input
  c.model.attention_dropout = 0.0
  c.model.activation_dropout = 0.0
  c.model.dropout_input = 0.0
  c.model.audio_normalize = True  # standardise each clip (fairseq normalize; BASE wav2vec 2.0: off)
  c.model.dtype = 'float32'      # compute dtype: 'float32' | 'bfloat16' (params stay float32)
  c.model.remat = False

  c.data = ml_collections.ConfigDict()
  c.data.modality = 'image'      # 'image' | 'audio': what the records hold (data/modality.py)
  c.data.source = 'builtin'      # 'builtin' | 'tfds' | 'folder' (see data/sources.py)
  # builtin: 'mnist5k' | 'mnist5k_color' | 'digits'; tfds: a TFDS name ('cifar10')
  c.data.name = 'mnist5k'
  c.data.path = ''               # folder: ROOT with train/<class>/*.jpg (or flat), optional val/
  c.data.data_dir = ''           # tfds: where it is prepared ('' = TFDS default)
  c.data.image_key = 'image'     # tfds feature names
  c.data.label_key = 'label'
  c.data.max_bad_fraction = 0.01  # unreadable images above this fraction stop the run
  c.data.max_upscale = 2.0       # crops may be at most this many times the images' shorter side
  c.data.decode_min_side = 0     # folder: >0 lets JPEG decoding downscale to this side (speed)
  c.data.train_split = 'train'
  c.data.eval_train_split = 'train'   # kNN memory bank / linear-probe training split
  c.data.eval_split = 'test'
  c.data.image_size = 32
  c.data.clip_samples = 16000    # audio: samples per training / eval clip (1 s at 16 kHz)
  c.data.speech_speakers = (100, 30)   # built-in speech sets: (train, test) voices, disjoint
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
  c.optim.grad_accum_steps = 1   # micro-batches per update (batch statistics are per micro-batch)

  c.train = ml_collections.ConfigDict()
  # Run length: exactly one of steps / epochs (the other 0), or neither with budget_minutes.
  # epochs -> steps = ceil(epochs * training images / data.batch_size); budget_minutes > 0 times
  # a few steps and caps the run at what fits the budget (train/loop.py, resolve_run_length).
  c.train.steps = 100
  c.train.epochs = 0.0
  c.train.budget_minutes = 0.0
  c.train.steps_from = ''        # set by the resolver: '' (given) | 'epochs' | 'budget_minutes'
  # Label-free monitors (RankMe, embedding std, alignment/uniformity: eval/monitors.py) every N
  # steps and at the end, to history.json, TensorBoard (monitor/*) and the summary (0: off).
  c.train.monitor_every = 0
  c.train.log_every = 10
  c.train.checkpoint_every = 50
  c.train.keep_checkpoints = 3
  c.train.knn_every = 0          # online kNN every N steps (0: off)
  c.train.nan_policy = 'skip'    # 'skip' the update and count it | 'stop' the run
  c.train.max_consecutive_skips = 20  # 'skip': stop after this many skips in a row (0: never)
  # Resuming a checkpoint that does not fit the config (e.g. optim.* changed) stops the run;
  # True loads its params (+ buffers whose shapes agree) and step into a fresh optimizer state.
  c.train.warm_start = False
  c.train.ignore_quarantined = False  # start at step 0 although checkpoints_corrupt/ holds the run
  c.train.preemption_sync_every = 10  # multi-process: agree on a SIGTERM stop every N steps
  c.train.progress_bar = True
  c.train.wandb_project = ''      # Weights & Biases project ('' = TensorBoard only; pip install wandb)
  c.train.wandb_mode = 'online'   # 'online' | 'offline' (WORKDIR/wandb, `wandb sync` later) | 'disabled'
  c.train.final_eval = True      # kNN of the trained and of a random-init encoder at the end
  # Resume with a config whose trajectory fields (batch size, steps, optim.*, method.*, model.*,
  # data source, seed...) differ from WORKDIR/config.json: False stops with the differences,
  # True continues with the new values (the table: FIELD_RULES in ssl_jax/train/workdir.py).
  c.train.allow_config_change = False

  c.eval = ml_collections.ConfigDict()
  c.eval.knn_k = 20
  c.eval.knn_temperature = 0.07
  c.eval.batch_size = 512
  # --mode=eval (ssl_jax/eval/): kNN at every k below, then the linear probe on frozen features.
  c.eval.knn_ks = (10, 20, 200)
  c.eval.linear = True
  c.eval.linear_epochs = 100
  c.eval.linear_batch_size = 256
  c.eval.linear_lr = 0.1         # per 256 examples; SGD-momentum (MoCo/DINO) or LARS (MAE)
  c.eval.linear_optimizer = 'sgd'
  c.eval.linear_weight_decay = 0.0
  c.eval.linear_normalize = 'standardize'  # 'standardize' (MAE's BN) | 'l2' | 'none'
  c.eval.linear_augment_steps = 0  # >0: MoCo/DINO probe on random crops for this many steps
  c.eval.finetune_steps = 0      # >0: also fine-tune the whole encoder (eval/finetune.py)
  c.eval.finetune_lr = 1e-3      # AdamW, per 256 examples (MAE: 5e-4 B/256 for ViT-B)
  c.eval.finetune_layer_decay = 0.75
  c.eval.finetune_drop_path = 0.1
  c.eval.finetune_label_smoothing = 0.1
  c.eval.finetune_mixup = 0.0    # mixup alpha (0: off)
  c.eval.finetune_weight_decay = 0.05
  c.eval.finetune_batch_size = 256
  c.eval.plot = 'tsne'           # embedding PNG: 'tsne' | 'umap' | '' (off)
  # data.modality='audio' on a built-in speech set (eval/speech.py): the frame phone probe of
  # block speech_layer (0 = last) and PNMI of speech_units k-means units of every block.
  c.eval.speech_eval = True
  c.eval.speech_units = 100
  c.eval.speech_layer = 0
  c.eval.online_linear = False   # BYOL-style stop-gradient linear head during pretraining
  c.eval.online_lr = 0.1
  c.eval.online_num_classes = 0  # 0: from the training source

  c.export = ml_collections.ConfigDict()  # --mode=export (ssl_jax/export/run.py)
  c.export.dir = ''              # '' = WORKDIR/export
  c.export.timm = True           # also write timm-layout safetensors (ViT, width-64 ResNet)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (-1,)           # -1: all remaining devices
  c.mesh.axes = ('data',)        # ('data', 'fsdp') shards params/opt state over 'fsdp'
  c.mesh.fsdp_min_size = 2**14   # leaves smaller than this stay replicated under FSDP
  c.mesh.rules = ()              # (('regex on leaf path', 'replicate'|'fsdp'), ...)
  return c


def _require(cond: bool, field: str, msg: str):
  if not cond:
    raise ValueError(f'config.{field}: {msg}')


def _choice(value, field: str, choices):
  if value not in choices:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f' (did you mean {close[0]!r}?)' if close else ''
    raise ValueError(f'config.{field}={value!r} is not valid{hint}; choose one of {list(choices)}')


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


# Sections whose every field is defined in base_config(); 'aug' holds per-method extras, 'method'
# the fields of the method's Hparams, checked when the method is built (methods/hparams.py).
_CHECKED_SECTIONS = ('model', 'data', 'optim', 'train', 'eval', 'mesh')


def _check_field_names(config):
  """A field that is not in base_config() but close to one that is, is a typo: name both."""
  base = base_config()
  def check(names, known, prefix):
    for name in names:
      if name in known:
        continue
      close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
      if close:
        raise ValueError(f'config.{prefix}{name} is not a known field (did you mean '
                         f'config.{prefix}{close[0]}?)')
  check(config.keys(), base.keys(), '')
  for section in _CHECKED_SECTIONS:
    if section in config and hasattr(config[section], 'keys'):
      check(config[section].keys(), base[section].keys(), f'{section}.')


def _check_types(config):
  """Wrong types caught before any comparison would raise a TypeError deep inside the trainer."""
  _require(isinstance(config.seed, int) and not isinstance(config.seed, bool) and config.seed >= 0,
           'seed', f'must be a non-negative integer, got {config.seed!r}')
  for field in ('method.name', 'model.backbone', 'optim.name', 'data.source', 'data.name',
                'train.nan_policy'):
    section, key = field.split('.')
    value = config[section][key]
    _require(isinstance(value, str), field, f'must be a string, got {value!r}')
  for field in ('optim.lr', 'optim.weight_decay', 'data.flip', 'data.eval_crop_frac'):
    section, key = field.split('.')
    _require(_is_number(config[section][key]), field,
             f'must be a number, got {config[section][key]!r}')
  for field in ('optim.warmup_steps', 'train.knn_every', 'data.num_workers', 'data.prefetch'):
    section, key = field.split('.')
    value = config[section].get(key, 0)
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, field,
             f'must be a non-negative integer, got {value!r}')
  sync = config.train.get('preemption_sync_every', 10)
  _require(isinstance(sync, int) and not isinstance(sync, bool) and sync > 0,
           'train.preemption_sync_every', f'must be a positive integer, got {sync!r}')
  _require(config.optim.weight_decay >= 0, 'optim.weight_decay',
           f'must be >= 0, got {config.optim.weight_decay}')
  scale = config.data.crop_scale
  _require(isinstance(scale, (tuple, list)) and len(scale) == 2 and all(map(_is_number, scale)),
           'data.crop_scale', f'must be a pair (min, max) of area fractions, got {scale!r}')
  _require(scale[1] <= 1, 'data.crop_scale',
           f'max={scale[1]} asks for crops larger than the image (area fraction must be <= 1)')
  _require(0 <= config.data.flip <= 1, 'data.flip',
           f'is a probability and must be in [0, 1], got {config.data.flip}')
  _require(0 < config.data.eval_crop_frac <= 1, 'data.eval_crop_frac',
           f'must be in (0, 1], got {config.data.eval_crop_frac}')
  if config.model.backbone.startswith('vit'):
    p = config.model.patch_size
    _require(isinstance(p, int) and 0 < p <= config.data.image_size, 'model.patch_size',
             f'must be a positive integer no larger than data.image_size='
             f'{config.data.image_size}, got {p!r}')
  shape, axes = config.mesh.shape, config.mesh.axes
  _require(isinstance(shape, (tuple, list)) and all(isinstance(s, int) and (s > 0 or s == -1)
                                                    for s in shape), 'mesh.shape',
           f'must be a tuple of positive integers (one may be -1), got {shape!r}')
  _require(isinstance(axes, (tuple, list)) and all(isinstance(a, str) for a in axes)
           and len(set(axes)) == len(axes), 'mesh.axes',
           f'must be a tuple of distinct axis names, got {axes!r}')


def _check_swin(config):
  """Swin shape fields: per-stage overrides of one length, an image size that is a multiple of the
  output stride (every patch merging halves an even map; windows are padded as needed)."""
  from ssl_jax import models  # pylint: disable=g-import-not-at-top
  m = config.model
  depths, heads = tuple(m.get('swin_depths', ())), tuple(m.get('swin_heads', ()))
  _require(all(isinstance(n, int) and n > 0 for n in depths + heads), 'model.swin_depths',
           f'and model.swin_heads must be positive integers, got {depths!r} / {heads!r}')
  _require(len(depths) == len(heads), 'model.swin_heads',
           f'needs one entry per stage of model.swin_depths={depths!r}, got {heads!r}')
  _require(isinstance(m.window_size, int) and m.window_size > 0, 'model.window_size',
           f'must be a positive integer, got {m.window_size!r}')
  try:
    models.build_backbone(m).check_image_size(config.data.image_size)
  except ValueError as e:
    raise ValueError(f'config.data.image_size: {e}') from None


def _check_vit_parts(m):
  """The issue-32 ViT fields: types, ranges, and RoPE's head width (models/vit.py)."""
  regs = m.get('num_registers', 0)
  _require(isinstance(regs, int) and not isinstance(regs, bool) and regs >= 0,
           'model.num_registers', f'must be a non-negative integer, got {regs!r}')
  ls = m.get('layerscale_init', 0.0)
  _require(_is_number(ls) and ls >= 0, 'model.layerscale_init',
           f'must be a number >= 0 (0 = off; DINOv2 uses 1e-5), got {ls!r}')
  _choice(m.get('mlp', 'gelu'), 'model.mlp', ('gelu', 'swiglu'))
  for field in ('qk_norm', 'rope', 'pos_embed_antialias'):
    _require(isinstance(m.get(field, False), bool), f'model.{field}',
             f'must be True or False, got {m.get(field)!r}')
  if m.get('rope', False) and m.backbone.startswith('vit'):
    from ssl_jax.models import vit  # pylint: disable=g-import-not-at-top
    preset = vit.VIT_PRESETS.get(m.backbone, {})
    d = m.get('embed_dim', 0) or preset.get('embed_dim', 0)
    h = m.get('num_heads', 0) or preset.get('num_heads', 0)
    _require(not (d and h) or (d // h) % 4 == 0, 'model.rope',
             f'needs head_dim = embed_dim / num_heads divisible by 4, got {d}/{h}; change '
             'model.embed_dim or model.num_heads')
# The share of a time budget left for what follows the training steps (the final kNN of the
# trained and the random encoder, monitors, checkpoints): train.budget_minutes trains for 90%.
BUDGET_RESERVE = 0.1


def steps_for_epochs(epochs: float, num_images: int, batch_size: int) -> int:
  """Optimizer steps in ``epochs`` passes over ``num_images`` at ``batch_size`` (rounded up, >= 1)."""
  return max(1, math.ceil(epochs * num_images / batch_size))


def steps_for_budget(budget_minutes: float, seconds_per_step: float, spent_seconds: float = 0.0,
                     compile_seconds: float = 0.0) -> int:
  """Steps that fit ``budget_minutes``: (budget - time spent measuring - one more compile)
  x (1 - BUDGET_RESERVE) / seconds per step, at least 1."""
  left = budget_minutes * 60.0 - spent_seconds - compile_seconds
  return max(1, int(left * (1.0 - BUDGET_RESERVE) / max(seconds_per_step, 1e-9)))


def check_run_length(train):
  """Exactly one of train.steps / train.epochs, or neither with train.budget_minutes (a resolved
  config, train.steps_from set, keeps the epochs / budget it was sized from beside its steps)."""
  steps, epochs = train.steps, train.get('epochs', 0) or 0
  budget = train.get('budget_minutes', 0) or 0
  _require(_is_number(epochs) and epochs >= 0, 'train.epochs',
           f'must be a non-negative number, got {epochs!r}')
  _require(_is_number(budget) and budget >= 0, 'train.budget_minutes',
           f'must be a non-negative number of minutes, got {budget!r}')
  _choice(train.get('steps_from', ''), 'train.steps_from', ('', 'epochs', 'budget_minutes'))
  if train.get('steps_from', ''):
    return
  if steps and epochs:
    raise ValueError(f'config.train.epochs={epochs:g} and config.train.steps={steps} are both set; '
                     'set exactly one, e.g. add --config.train.steps=0 to train by epochs')
  _require(bool(steps or epochs or budget), 'train.steps',
           'is 0 and neither train.epochs nor train.budget_minutes is set; set one, e.g. '
           '--config.train.epochs=40')


def validate(config, num_devices: int | None = None):
  """Checks the fields the trainer relies on; raises ValueError naming the first bad field."""
  from ssl_jax import methods, models  # pylint: disable=g-import-not-at-top
  _check_field_names(config)
  _check_types(config)
  check_run_length(config.train)
  methods.check_name(config.method.name)   # the method's own fields: methods.build_method
  _choice(config.model.backbone, 'model.backbone', models.BACKBONES)
  _choice(config.optim.name, 'optim.name', ('lars', 'adamw', 'sgd'))
  _choice(config.optim.lr_scaling, 'optim.lr_scaling', ('linear', 'sqrt', 'none'))
  _choice(config.train.nan_policy, 'train.nan_policy', ('skip', 'stop'))
  _choice(config.model.dtype, 'model.dtype', ('float32', 'bfloat16'))
  _choice(config.model.get('conv_impl', 'auto'), 'model.conv_impl', models.resnet.CONV_IMPLS)
  _choice(config.model.get('cpu_dots', 'auto'), 'model.cpu_dots', CPU_DOTS)
  _choice(config.model.get('pos_embed', 'learned'), 'model.pos_embed',
          ('learned', 'sincos', 'none'))
  _check_vit_parts(config.model)
  _choice(config.model.get('pool', 'token'), 'model.pool', ('token', 'mean'))
  for field in ('data.batch_size', 'data.image_size', 'train.steps', 'train.log_every',
                'train.checkpoint_every', 'train.keep_checkpoints', 'eval.knn_k',
                'eval.batch_size', 'model.width', 'optim.grad_accum_steps'):
    section, key = field.split('.')
    value = config[section][key]
    _require(isinstance(value, int) and not isinstance(value, bool), field,
             f'must be an integer, got {value!r}')
    _require(value > 0, field, f'must be positive, got {value}')
  _require(config.optim.lr > 0, 'optim.lr', f'must be positive, got {config.optim.lr}')
  _require(config.optim.warmup_steps >= 0, 'optim.warmup_steps', 'must be >= 0')
  _require(config.train.knn_every >= 0, 'train.knn_every', 'must be >= 0')
  _choice(config.eval.get('linear_optimizer', 'sgd'), 'eval.linear_optimizer', ('sgd', 'lars'))
  _choice(config.eval.get('linear_normalize', 'standardize'), 'eval.linear_normalize',
          ('standardize', 'l2', 'none'))
  _choice(config.eval.get('plot', ''), 'eval.plot', ('tsne', 'umap', ''))
  _choice(config.train.get('wandb_mode', 'online'), 'train.wandb_mode',
          ('online', 'offline', 'disabled'))
  _require(all(isinstance(k, int) and k > 0 for k in config.eval.get('knn_ks', (20,))),
           'eval.knn_ks', f"must be positive integers, got {config.eval.get('knn_ks')!r}")
  _choice(config.data.source, 'data.source', ('builtin', 'tfds', 'folder'))
  _choice(config.data.get('modality', 'image'), 'data.modality', ('image', 'audio'))
  if config.data.get('modality', 'image') == 'audio':
    clip = config.data.get('clip_samples', 16000)
    _require(isinstance(clip, int) and not isinstance(clip, bool) and clip > 0,
             'data.clip_samples', f'must be a positive integer (samples per clip), got {clip!r}')
    _require(config.data.source in ('builtin', 'folder'), 'data.source',
             f"is {config.data.source!r}; audio reads a built-in speech set (data.source="
             "'builtin', data.name='spoken_words' or 'spoken_digits') or a folder of .wav files "
             "(data.source='folder')")
  if config.data.source == 'folder':
    _require(bool(config.data.get('path')), 'data.path',
             "is empty; data.source='folder' needs the image folder, e.g. "
             '--config.data.path=/data/my_images')
  if config.data.source == 'tfds':
    _require(bool(config.data.name), 'data.name', "is empty; data.source='tfds' needs a TFDS name")
  bad = config.data.get('max_bad_fraction', 0.01)
  _require(0 <= bad < 1, 'data.max_bad_fraction', f'must be in [0, 1), got {bad}')
  _require(config.data.get('max_upscale', 2.0) > 0, 'data.max_upscale', 'must be positive')
  _require(config.data.num_workers >= 0, 'data.num_workers', 'must be >= 0')
  lo, hi = config.data.crop_scale
  _require(0 < lo <= hi <= 1, 'data.crop_scale', f'must satisfy 0 < min <= max <= 1, got {(lo, hi)}')
  if config.model.backbone.startswith('vit'):
    _require(config.data.image_size % config.model.patch_size == 0, 'data.image_size',
             f'{config.data.image_size} is not a multiple of model.patch_size='
             f'{config.model.patch_size}')
  if config.model.backbone.startswith('swin'):
    _check_swin(config)
  accum = config.optim.get('grad_accum_steps', 1)
  _require(config.data.batch_size % accum == 0, 'optim.grad_accum_steps',
           f'data.batch_size={config.data.batch_size} is not divisible into {accum} micro-batches')
  _require(all(isinstance(n, int) and n > 0 for n in config.model.get('stage_sizes', ())),
           'model.stage_sizes', f"must be positive integers, got {config.model.get('stage_sizes')!r}")
  if num_devices is not None:
    data_par = num_devices
    _require(config.data.batch_size % data_par == 0, 'data.batch_size',
             f'{config.data.batch_size} is not divisible by the number of devices ({data_par})')
    _require((config.data.batch_size // accum) % data_par == 0, 'optim.grad_accum_steps',
             f'micro-batches of {config.data.batch_size // accum} (data.batch_size / '
             f'{accum}) are not divisible by the number of devices ({data_par})')
    _require(config.eval.batch_size % data_par == 0, 'eval.batch_size',
             f'{config.eval.batch_size} is not divisible by the number of devices ({data_par})')
  return config
