"""The ``folder`` recipe: a method's settings chosen from the user's own images (issue 31).

``--config=configs/<method>.py:folder,PATH[,MINUTES]`` reads PATH (the layouts of
ssl_jax/data/folder.py), measures it (image count, classes, median shorter side, colour or grey;
data.folder.folder_stats) and sets the recipe by the rules below, for a compute budget of MINUTES
(default 10: a CPU run; the run is also capped at it, train.budget_minutes). It prints the recipe
it chose; every field stays overridable with ``--config.FIELD=VALUE`` (applied afterwards).

The rules (``choose``), each a line of ``Recipe``:

* resolution: the median shorter side rounded down to a multiple of 8 and capped by the budget
  (<= 30 min: 32 px; <= 4 h: 64 px; else 224 px); never below 16 px.
* crop scale (RandomResizedCrop area): (0.2, 1) up to 32 px (small images lose their object in
  tighter crops; MoCo / SimCLR CIFAR practice), (0.14, 1) up to 96 px, else the ImageNet (0.08, 1).
* flips 0.5 always (nothing assumes digits or text; set data.flip=0 for mirror-sensitive data).
* colour images: colour jitter p 0.8 (brightness/contrast/saturation 0.4, hue 0.5: the whole hue
  circle) and grayscale p 0.2. SimCLR's CIFAR hue 0.1 leaves each image's colours almost intact,
  and on folders whose colours vary per image but not per class the instance task is then solved
  by colour alone (measured on the held-out textures: contrastive accuracy 0.09 -> 0.43, kNN at
  0.19 against 0.15 random); grey images: brightness/contrast jitter only, no saturation, hue or
  grayscale (no-ops on grey). Gaussian blur only above 32 px (SimCLR drops it on CIFAR: it
  erases small images).
* backbone: a CIFAR-stem ResNet (ViT methods: a ViT with an 8x8 patch grid) that grows with the
  budget: <= 15 min a ResNet-10 (one block per stage) of width 16 (ViT dim 64, depth 4), whose
  step takes 0.27 s against ResNet-18's 0.62 s at batch 64, 32 px (2-core Xeon), so a short
  budget gets 2.3x the steps; <= 2 h ResNet-18 width 32 (ViT dim 192, depth 6); else ResNet-18
  width 64 (ViT-S).
* batch: 256 from 10k images, 128 from 2k, else 64 (small sets need the updates more than the
  negatives).
* epochs: 200 below 5k images, 100 below 50k, else 30; the budget caps the steps
  (train.budget_minutes times the step first: see train/loop.py resolve_run_length).
* evaluation: the folder's val/ (or test/) split when it has one, else kNN and the final
  evaluation are off (train.final_eval=False): the label-free monitors (train.monitor_every) say
  whether it learns.

The method's own short-run settings (learning rate, teacher momentum, head sizes) come from its
config file's ``builtin`` recipe for budgets up to 30 min, where runs are a few hundred steps.
A method's ``folder_config`` may adjust them after ``configure`` (SimCLR keeps its LARS lr 1.0
unscaled at the folder's smaller batch: configs/simclr.py).
"""
from __future__ import annotations

import dataclasses
import sys

from ssl_jax import paths
from ssl_jax.data import folder as folder_lib

DEFAULT_MINUTES = 10.0
USAGE = "'folder,PATH' or 'folder,PATH,MINUTES' (e.g. folder,/data/my_images,10)"


@dataclasses.dataclass(frozen=True)
class Recipe:
  image_size: int
  crop_scale: tuple
  flip: float
  colour: bool
  blur: bool
  width: int            # ResNet first-stage width
  stage_sizes: tuple    # ResNet blocks per stage (() = ResNet-18's)
  vit: tuple            # ViT (embed_dim, depth, heads)
  batch_size: int
  epochs: int
  minutes: float
  labelled: bool
  short_run: bool       # <= 30 min: the method's builtin (few-hundred-step) settings


def parse_arg(arg: str):
  """'folder,PATH[,MINUTES]' -> (PATH, minutes); ValueError naming the form otherwise."""
  parts = arg.split(',')
  if parts[0] != 'folder' or len(parts) not in (2, 3) or not parts[1]:
    raise ValueError(f'variant {arg!r}: the folder recipe is {USAGE}')
  try:
    minutes = float(parts[2]) if len(parts) == 3 else DEFAULT_MINUTES
  except ValueError:
    raise ValueError(f'variant {arg!r}: MINUTES must be a number; use {USAGE}') from None
  return parts[1], minutes


def choose(stats: folder_lib.FolderStats, minutes: float = DEFAULT_MINUTES,
           has_eval_split: bool = True) -> Recipe:
  """The recipe for a folder of ``stats`` and a budget of ``minutes`` (the module's rules)."""
  cap = 32 if minutes <= 30 else 64 if minutes <= 240 else 224
  size = max(16, min(cap, stats.side // 8 * 8))
  crop = (0.2, 1.0) if size <= 32 else (0.14, 1.0) if size <= 96 else (0.08, 1.0)
  if minutes <= 15:
    width, stage_sizes, vit = 16, (1, 1, 1, 1), (64, 4, 4)   # ResNet-10
  elif minutes <= 120:
    width, stage_sizes, vit = 32, (), (192, 6, 3)
  else:
    width, stage_sizes, vit = 64, (), (384, 12, 6)
  n = stats.num_images
  batch = 256 if n >= 10_000 else 128 if n >= 2_000 else 64
  epochs = 200 if n < 5_000 else 100 if n < 50_000 else 30
  return Recipe(image_size=size, crop_scale=crop, flip=0.5, colour=stats.colour, blur=size > 32,
                width=width, stage_sizes=stage_sizes, vit=vit, batch_size=batch, epochs=epochs,
                minutes=float(minutes),
                labelled=bool(stats.num_classes) and has_eval_split, short_run=minutes <= 30)


def aug_overrides(r: Recipe) -> dict:
  """config.aug.overrides for every view (see data/augment.py get_recipe)."""
  if r.colour:
    over = dict(color_jitter=dict(p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.5),
                grayscale=0.2)
  else:
    over = dict(color_jitter=dict(p=0.8, brightness=0.4, contrast=0.4, saturation=0.0, hue=0.0),
                grayscale=None)
  if not r.blur:
    over['blur'] = None
  return over


def describe(r: Recipe, method: str, backbone: str) -> str:
  """The one-line summary the run prints."""
  depth = 10 if r.stage_sizes == (1, 1, 1, 1) else 18
  model = (f'ResNet-{depth} width {r.width}' if backbone.startswith('resnet')
           else f'ViT dim {r.vit[0]} depth {r.vit[1]} patch {r.image_size // 8}')
  aug = ('colour jitter 0.8 (hue 0.5), grayscale 0.2' if r.colour
         else 'grey: brightness/contrast jitter')
  return (f'{method} folder recipe: {r.image_size} px, crop scale {r.crop_scale}, flip {r.flip}, '
          f'{aug}, blur {"on" if r.blur else "off"}, {model}, batch {r.batch_size}, {r.epochs} '
          f'epochs capped at {r.minutes:g} min, eval '
          f'{"kNN on its test/val split" if r.labelled else "off (monitors only)"}')


def base_variant(arg: str) -> str:
  """The variant whose method settings the folder recipe starts from: 'builtin' (a few hundred
  CPU steps) for budgets up to 30 min, else 'cifar10' (the paper's small-image settings)."""
  return 'builtin' if parse_arg(arg)[1] <= 30 else 'cifar10'


def _has_eval_split(root: str) -> bool:
  return any(paths.as_path(root).joinpath(s).is_dir() for s in ('val', 'validation', 'test'))


def configure(c, arg: str, *, vit: bool = False):
  """Sets c's data, backbone, run length, augmentation and evaluation from the folder in ``arg``
  by ``choose``; returns the Recipe (the method's config then sets its own fields)."""
  root, minutes = parse_arg(arg)
  stats = folder_lib.folder_stats(root)
  r = choose(stats, minutes, _has_eval_split(root))
  c.data.source, c.data.name, c.data.path = 'folder', 'folder', root
  c.data.image_size, c.data.crop_scale, c.data.flip = r.image_size, r.crop_scale, r.flip
  c.data.batch_size = r.batch_size
  c.data.eval_split = 'test' if r.labelled else c.data.eval_split
  c.data.decode_min_side = r.image_size
  if vit:
    c.model.backbone = 'vit_tiny'
    c.model.embed_dim, c.model.depth, c.model.num_heads = r.vit
    c.model.patch_size = max(2, r.image_size // 8)
    c.model.img_size = r.image_size
  else:
    c.model.backbone, c.model.width, c.model.cifar_stem = 'resnet18', r.width, r.image_size <= 64
    c.model.stage_sizes = r.stage_sizes
  if c.aug.recipe != 'none':   # methods without photometric views (MAE) keep crops and flips
    c.aug.overrides = aug_overrides(r)
  c.train.steps, c.train.epochs, c.train.budget_minutes = 0, float(r.epochs), r.minutes
  c.train.checkpoint_every = 500
  c.train.monitor_every = 100
  c.train.final_eval = r.labelled
  c.optim.warmup_steps = 20
  c.eval.batch_size = 256
  print(f'ssl_jax: {describe(r, c.method.name, c.model.backbone)}', file=sys.stderr, flush=True)
  return r
