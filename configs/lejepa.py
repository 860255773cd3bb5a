"""LeJEPA (Balestriero & LeCun 2025): multi-view prediction + SIGReg, one hyper-parameter lambda.

Variants (``--config=configs/lejepa.py:<variant>[,<backbone>]``):

* ``builtin`` — width-8 CIFAR-stem ResNet-18 on the built-in MNIST-5k set, 4 views of 16 px (all
  global, as the official MINIMAL example: every view predicts the mean of all views), projector
  3 layers 512-512-64 with BatchNorm, lambda 0.05, 256 slices, AdamW, batch 128, 300 steps; a few
  minutes on a 2-core CPU::

      python -m ssl_jax.main --config=configs/lejepa.py:builtin --workdir=/tmp/lejepa_builtin

* ``cifar10`` — ResNet-18 (CIFAR stem), 4 views of 32 px, batch 256, AdamW lr 2e-3, weight decay
  0.05, lambda 0.02, 16-d projection (the official MINIMAL recipe's settings), 800 epochs::

      python -m ssl_jax.main --config=configs/lejepa.py:cifar10 --workdir=gs://BUCKET/lejepa_c10

* ``imagenet`` — ViT-S/16 (default; ``imagenet,vit_base``, ``imagenet,vit_large``): 2 global
  crops of 224 px (scale 0.3..1) and 6 local crops of 96 px (scale 0.05..0.3), every view
  predicting the mean of the 2 global views, lambda 0.05, SIGReg with 1024 slices and the
  Epps-Pulley quadrature of the official code (17 knots on [0, 3]), projector 3 layers
  2048-2048-128 with BatchNorm, AdamW lr 5e-4 x B/256 (B = 512), weight decay 0.05, 10 warm-up
  epochs then cosine, drop path 0.1, 100 epochs (the paper's IN-1k schedule)::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/lejepa.py:imagenet --workdir=gs://BUCKET/lejepa_in1k
"""
import ml_collections

from configs import _common as common
from ssl_jax import config as config_lib


def get_config(arg: str = 'builtin'):
  variant, _, backbone = arg.partition(',')
  c = config_lib.base_config()
  m = c.method
  m.name = 'lejepa'
  m.lambd = 0.05
  m.num_slices = 1024
  m.t_max = 3.0
  m.knots = 17
  m.num_global_crops = 2
  m.num_local_crops = 6
  m.local_crop_size = 96
  m.global_crop_scale = (0.3, 1.0)
  m.local_crop_scale = (0.05, 0.3)
  m.proj_layers = 3
  m.proj_hidden_dim = 2048
  m.proj_dim = 128
  m.proj_bn = True
  # The official MINIMAL example's augmentation for every view (SimCLR's colour distortion,
  # grayscale, blur) plus solarisation 0.2: BYOL's second view.
  c.aug = ml_collections.ConfigDict({'recipe': 'byol_view2'})
  c.optim.name = 'adamw'
  c.optim.lr = 5e-4
  c.optim.weight_decay = 0.05
  c.optim.min_lr_ratio = 1e-3

  if variant == 'builtin':
    common.builtin_data(c, image_size=16, batch_size=128)
    common.cifar_resnet18(c, width=8)
    m.num_global_crops, m.num_local_crops = 4, 0
    m.num_slices = 256
    m.proj_hidden_dim, m.proj_dim = 512, 64
    c.optim.lr = 2e-3
    common.schedule(c, steps=300, warmup_steps=20, checkpoint_every=100)
  elif variant == 'cifar10':
    common.cifar10_data(c, batch_size=256)
    common.cifar_resnet18(c)
    m.num_global_crops, m.num_local_crops = 4, 0
    m.lambd = 0.02
    m.proj_dim = 16
    c.optim.lr = 2e-3
    common.schedule(c, steps=800 * 195, warmup_steps=195, checkpoint_every=5000,
                    knn_every=10000)
  elif variant == 'imagenet':
    common.imagenet_data(c, batch_size=512)
    common.vit(c, backbone, default='vit_small', patch_size=16)
    c.model.drop_path_rate = 0.1
    common.schedule(c, steps=100 * 2502, warmup_steps=10 * 2502, checkpoint_every=2000,
                    knn_every=25000)
  else:
    raise common.unknown_variant('lejepa', variant, hint="optionally ',<backbone>'")
  if backbone and variant != 'imagenet':   # the ResNet variants take any backbone suffix too
    common.apply_backbone(c, backbone)
  return c
