"""Settings shared by the method configs' ``builtin`` / ``cifar10`` / ``imagenet`` variants.

Only the plumbing lives here (which data set and how it is read, the backbone's shape for the
variant, run length and checkpoint / online-kNN cadence, the error for an unknown variant); every
method's own hyper-parameters stay in its ``configs/<name>.py``. The leading underscore keeps this
module out of the sweeps over ``configs/*.py`` that expect a ``get_config``. Config files import it
as ``from configs import _common as common``: ``configs`` is a package of the installed project and
the repository root is on ``sys.path`` when running from it.
"""

VARIANTS = "'builtin', 'cifar10' or 'imagenet'"
VIT_BACKBONES = "optionally ',vit_tiny|vit_small|vit_base'"


def unknown_variant(name: str, variant: str, choices: str = VARIANTS, hint: str = ''):
  """The ValueError for a variant that ``configs/<name>.py`` does not define (raise it)."""
  message = f'unknown variant {variant!r} of configs/{name}.py; use {choices}'
  return ValueError(f'{message} ({hint})' if hint else message)


# -- data ----------------------------------------------------------------------------------------
def builtin_data(c, *, image_size: int, batch_size: int, crop_scale=None):
  """The built-in MNIST-5k set (CPU-sized runs): no flips, digits are not mirror-symmetric.

  crop_scale None keeps the value set so far.
  """
  _data(c, 'builtin', 'mnist5k', image_size, batch_size, crop_scale)
  c.data.flip = 0.0
  return c


def cifar10_data(c, *, batch_size: int, image_size: int = 32, crop_scale=None):
  """CIFAR-10 from TFDS (crop_scale None keeps the value set so far)."""
  return _data(c, 'tfds', 'cifar10', image_size, batch_size, crop_scale)


def imagenet_data(c, *, batch_size: int, image_size: int = 224, crop_scale=None):
  """ImageNet-1k from TFDS: centre-crop evaluation (0.875), 16 input workers, eval batch 1024.

  crop_scale None keeps the value set so far.
  """
  _data(c, 'tfds', 'imagenet2012', image_size, batch_size, crop_scale)
  c.data.eval_crop_frac = 0.875
  c.data.num_workers = 16
  c.eval.batch_size = 1024
  return c


def speech_data(c, *, batch_size: int, name: str = 'spoken_words', clip_samples: int = 16000):
  """A built-in spoken-word set (``ssl_jax/data/speech.py``: generated offline with espeak-ng
  once, then cached; speakers disjoint between train and test), 1 s clips at 16 kHz."""
  c.data.modality = 'audio'
  c.data.source = 'builtin'
  c.data.name = name
  c.data.clip_samples = clip_samples
  c.data.batch_size = batch_size
  c.data.flip = 0.0
  c.aug.recipe = 'none'
  return c


def speech_pretraining(c, *, mask_prob: float):
  """The settings fairseq's speech pre-training configs share (wav2vec 2.0, HuBERT,
  data2vec-audio): span masks of 10 frames at ``mask_prob`` (at least 2 spans), Adam (0.9, 0.98)
  lr 5e-4 unscaled, weight decay 0.01; no linear probe of utterance features in ``--mode=eval``."""
  c.method.mask_prob = mask_prob
  c.method.mask_span = 10
  c.method.min_masks = 2
  c.optim.name = 'adamw'
  c.optim.lr = 5e-4
  c.optim.lr_scaling = 'none'
  c.optim.b1 = 0.9
  c.optim.b2 = 0.98
  c.optim.weight_decay = 0.01
  c.eval.linear = False
  return c


def speech_backbone(c, name: str, arg: str, backbone: str):
  """The ``,<speech encoder>`` suffix of a speech config's variant (``arg``): sets
  ``model.backbone``, or stops in one line when it names an image backbone."""
  from ssl_jax import models  # pylint: disable=g-import-not-at-top
  if backbone:
    if not models.is_audio_backbone(backbone):
      raise ValueError(f'configs/{name}.py:{arg}: {backbone!r} is not a speech encoder ({name} '
                       f'reads waveforms); use one of {list(models.AUDIOS)}')
    c.model.backbone = backbone
  return c


def speech_folder_data(c, *, batch_size: int, clip_samples: int, path: str = ''):
  """A folder of 16 kHz .wav files (``data.path``; LibriSpeech converted with ffmpeg, see
  docs/datasets.md), random ``clip_samples`` windows; 16 input workers."""
  speech_data(c, batch_size=batch_size, clip_samples=clip_samples)
  c.data.source = 'folder'
  c.data.name = 'folder'
  c.data.path = path
  c.data.num_workers = 16
  c.train.final_eval = False   # an unlabelled corpus: no kNN
  return c


def _data(c, source, name, image_size, batch_size, crop_scale):
  c.data.source = source
  c.data.name = name
  c.data.image_size = image_size
  c.data.batch_size = batch_size
  if crop_scale is not None:
    c.data.crop_scale = crop_scale
  return c


# -- backbones -----------------------------------------------------------------------------------
def cifar_resnet18(c, width: int = 64):
  """ResNet-18 with the CIFAR stem (3x3/1 conv, no max-pool) for small images.

  width: first-stage channels (64 = the paper's; the CPU-sized builtin runs use 8 or 16).
  """
  c.model.backbone = 'resnet18'
  c.model.width = width
  c.model.cifar_stem = True
  return c


def _backbone(c, backbone, default, cpu_size, size_fields, patch_size):
  c.model.backbone = backbone or default
  if cpu_size and not backbone:
    for field, value in zip(size_fields, cpu_size):
      c.model[field] = value
  c.model.patch_size = patch_size
  c.model.img_size = c.data.image_size
  return c


def vit(c, backbone: str, *, patch_size: int, default: str = '', cpu_size=None):
  """A ViT with `patch_size` px patches whose position embedding is built for c.data.image_size
  (so call this after the data helper).

  backbone: the ``,<backbone>`` part of the variant string; '' picks `default`, shrunk to
  cpu_size = (embed_dim, depth, num_heads) when that is given (a CPU-sized model).
  """
  return _backbone(c, backbone, default, cpu_size, ('embed_dim', 'depth', 'num_heads'),
                   patch_size)


def swin(c, backbone: str, *, patch_size: int, window_size: int, default: str = '',
         cpu_size=None):
  """A Swin (Liu et al. 2021) with `patch_size` px patch embedding and `window_size` windows, its
  export resolution c.data.image_size (so call this after the data helper).

  backbone: the ``,<backbone>`` part of the variant string; '' picks `default`, shrunk to
  cpu_size = (embed_dim, depths, heads) when that is given (a CPU-sized model).
  """
  c.model.window_size = window_size
  # The ViT-only model fields (pooling, position embedding, prefix tokens) go back to their
  # defaults: a Swin averages its last stage and has neither [CLS] nor absolute positions.
  c.model.update(dict(pool='token', pool_token=0, pos_embed='learned', num_prefix_tokens=1,
                      frozen_patch_embed=False))
  return _backbone(c, backbone, default, cpu_size, ('embed_dim', 'swin_depths', 'swin_heads'),
                   patch_size)


# -- run length ----------------------------------------------------------------------------------
def schedule(c, *, steps: int, checkpoint_every: int, warmup_steps=None, knn_every=None):
  """Training steps, checkpoint cadence and, where given, lr warm-up steps and online-kNN cadence
  (None keeps the value set so far)."""
  c.train.steps = steps
  c.train.checkpoint_every = checkpoint_every
  if warmup_steps is not None:
    c.optim.warmup_steps = warmup_steps
  if knn_every is not None:
    c.train.knn_every = knn_every
  return c


# -- the ',<backbone>' suffix --------------------------------------------------------------------
def apply_backbone(c, backbone: str):
  """Swaps the variant's backbone for ``backbone`` (a name of ``models.BACKBONES``), sized for the
  variant's images: ViT / Swin patches of 4 px up to 64 px images (16 / 4 above), position
  embedding at ``data.image_size``, the preset width (the CPU-sized shrink is the builtin
  default's only); a ResNet keeps the variant's width when it had one (else 64), with the CIFAR
  stem up to 64 px. A method that cannot use the new backbone says so when it is built."""
  from ssl_jax import models  # pylint: disable=g-import-not-at-top
  if backbone not in models.BACKBONES:
    import difflib  # pylint: disable=g-import-not-at-top
    close = difflib.get_close_matches(backbone, models.BACKBONES, n=1)
    hint = f' (did you mean {close[0]!r}?)' if close else ''
    raise ValueError(f'unknown backbone suffix {backbone!r}{hint}; choose one of '
                     f'{sorted(models.BACKBONES)}')
  small = c.data.image_size <= 64
  was_resnet = c.model.backbone.startswith('resnet')
  c.model.update(dict(embed_dim=0, depth=0, num_heads=0, swin_depths=(), swin_heads=(),
                      stage_sizes=()))
  if backbone.startswith('vit'):   # small images: the first patch size of 4, 5, 6, 3, 2 that fits
    size = c.data.image_size
    patch = next((p for p in (4, 5, 6, 3, 2) if size % p == 0), 4) if small else 16
    return _backbone(c, backbone, '', None, (), patch)
  if backbone.startswith('swin'):   # small images: the first three stages (output stride 16)
    swin(c, backbone, patch_size=4, window_size=4 if small else 7)
    if small:
      c.model.swin_depths, c.model.swin_heads = (2, 2, 6), (3, 6, 12)
    return c
  c.model.update(dict(pool='token', pool_token=0, pos_embed='learned', num_prefix_tokens=1,
                      frozen_patch_embed=False))
  c.model.backbone = backbone
  c.model.width = c.model.width if was_resnet else 64
  c.model.cifar_stem = small
  return c


def takes_backbone(get_config):
  """Decorates a config's ``get_config`` so that ``VARIANT,BACKBONE`` (e.g.
  ``configs/simclr.py:builtin,vit_small``) builds the variant, then :func:`apply_backbone`."""
  import functools  # pylint: disable=g-import-not-at-top

  @functools.wraps(get_config)
  def with_backbone(arg: str = 'builtin'):
    if arg.startswith('folder'):   # folder,PATH[,MINUTES]: the commas are the recipe's
      return get_config(arg)
    variant, _, backbone = arg.partition(',')
    c = get_config(variant)
    return apply_backbone(c, backbone) if backbone else c
  return with_backbone
