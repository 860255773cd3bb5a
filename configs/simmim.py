"""SimMIM (Xie et al. 2022): mask-token ViT, linear pixel head, L1 on masked pixels.

Variants (``--config=configs/simmim.py:<variant>[,<backbone>]``, backbone one of vit_tiny,
vit_small, vit_base):

* ``builtin`` — the same 96-d, depth-4 ViT (patch 4, 24 px) as ``configs/mae.py:builtin`` (so
  ``benchmarks/mim_throughput.py`` compares like with like); mask patches of 8 px (3x3 mask grid,
  ceil(0.6 x 9) = 6 masked), i.e. the paper's 32 px mask patches over 16 px model patches scaled
  down; batch 256, 300 steps::

      python -m ssl_jax.main --config=configs/simmim.py:builtin --workdir=/tmp/simmim_builtin

* ``cifar10`` — ViT-T with 4 px patches at 32 px, 8 px mask patches, 800 epochs, batch 1024::

      python -m ssl_jax.main --config=configs/simmim.py:cifar10 --workdir=gs://BUCKET/simmim_c10

* ``imagenet`` — ViT-B/16 at 224 px, the paper's ViT recipe: mask ratio 0.6 with 32 px mask
  patches, crops of scale (0.67, 1), AdamW (0.9, 0.999), weight decay 0.05, base lr 1e-4 per 512
  images (5e-5 per 256 here), batch 2048, 10 warm-up epochs, 800 epochs (cosine here; the paper
  steps the lr down at epoch 700)::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/simmim.py:imagenet --workdir=gs://BUCKET/simmim_in1k
"""
from ssl_jax import config as config_lib


def get_config(arg: str = 'builtin'):
  variant, _, backbone = arg.partition(',')
  c = config_lib.base_config()
  c.method.name = 'simmim'
  c.method.mask_ratio = 0.6
  c.method.mask_patch_size = 32
  c.method.feature_pool = 'mean'
  c.model.pos_embed = 'learned'
  c.aug.recipe = 'none'
  c.optim.name = 'adamw'
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.05
  c.optim.lr = 5e-5
  c.optim.lr_scaling = 'linear'
  c.optim.clip_grad_norm = 5.0
  c.data.crop_scale = (0.67, 1.0)

  if variant == 'builtin':
    c.model.backbone = backbone or 'vit_tiny'
    if not backbone:
      c.model.embed_dim, c.model.depth, c.model.num_heads = 96, 4, 3
    c.model.patch_size = 4
    c.model.img_size = 24
    c.method.mask_patch_size = 8
    c.data.source = 'builtin'
    c.data.name = 'mnist5k'
    c.data.image_size = 24
    c.data.crop_scale = (0.5, 1.0)
    c.data.flip = 0.0
    c.data.batch_size = 256
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 20
    c.train.steps = 300
    c.train.checkpoint_every = 100
  elif variant == 'cifar10':
    c.model.backbone = backbone or 'vit_tiny'
    c.model.patch_size = 4
    c.model.img_size = 32
    c.method.mask_patch_size = 8
    c.data.source = 'tfds'
    c.data.name = 'cifar10'
    c.data.image_size = 32
    c.data.batch_size = 1024
    c.optim.lr = 2e-4
    c.optim.warmup_steps = 10 * 48
    c.train.steps = 800 * 48
    c.train.checkpoint_every = 5000
    c.train.knn_every = 10000
  elif variant == 'imagenet':
    c.model.backbone = backbone or 'vit_base'
    c.model.patch_size = 16
    c.model.img_size = 224
    c.data.source = 'tfds'
    c.data.name = 'imagenet2012'
    c.data.image_size = 224
    c.data.eval_crop_frac = 0.875
    c.data.batch_size = 2048
    c.data.num_workers = 16
    c.optim.warmup_steps = 10 * 625
    c.train.steps = 800 * 625
    c.train.checkpoint_every = 1000
    c.train.knn_every = 10000
    c.eval.batch_size = 1024
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/simmim.py; use 'builtin', 'cifar10' "
                     "or 'imagenet' (optionally ',vit_tiny|vit_small|vit_base')")
  return c
