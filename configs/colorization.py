"""Colorful Image Colorization (Zhang et al. 2016), class-rebalanced classification over the
quantised ab bins.

Variants (``--config=configs/colorization.py:<variant>``):

* ``builtin`` — width-16 CIFAR-stem ResNet-18 at 24 px on the built-in set. The built-in digits are
  grey (a = b = 0 everywhere), so this variant only exercises the pipeline end to end; it cannot
  learn colour. Use a colour dataset for real runs::

      python -m ssl_jax.main --config=configs/colorization.py:builtin --workdir=/tmp/color_builtin

* ``cifar10`` — ResNet-18 (CIFAR stem) at 32 px, batch 128, Adam lr 3e-5 x (paper: Adam, lr 3e-5,
  betas (0.9, 0.99), weight decay 1e-3)::

      python -m ssl_jax.main --config=configs/colorization.py:cifar10 --workdir=gs://BUCKET/color_c10

* ``imagenet`` — ResNet-50 at 224 px (the paper used a VGG-style net at 256 px), batch 40 x 8
  devices as the paper's 40, Adam lr 3e-5, 450k iterations::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/colorization.py:imagenet --workdir=gs://BUCKET/color_in1k
"""
from ssl_jax import config as config_lib


def get_config(arg: str = 'builtin'):
  c = config_lib.base_config()
  c.method.name = 'colorization'
  c.method.decoder_dim = 128
  c.method.rebalance_lambda = 0.5
  c.method.soft_neighbours = 5
  c.method.soft_sigma = 5.0
  c.method.prior_images = 2000
  c.aug.recipe = 'none'
  c.optim.name = 'adamw'
  c.optim.lr = 3e-5
  c.optim.lr_scaling = 'none'
  c.optim.b1 = 0.9
  c.optim.b2 = 0.99
  c.optim.weight_decay = 1e-3

  if arg == 'builtin':
    c.model.backbone = 'resnet18'
    c.model.width = 16
    c.model.cifar_stem = True
    c.method.decoder_dim = 32
    c.method.prior_images = 200
    c.data.name = 'mnist5k'
    c.data.image_size = 24
    c.data.crop_scale = (0.5, 1.0)
    c.data.flip = 0.0
    c.data.batch_size = 128
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 20
    c.train.steps = 300
    c.train.checkpoint_every = 100
  elif arg == 'cifar10':
    c.model.backbone = 'resnet18'
    c.model.cifar_stem = True
    c.data.source = 'tfds'
    c.data.name = 'cifar10'
    c.data.image_size = 32
    c.data.crop_scale = (0.5, 1.0)
    c.data.batch_size = 128
    c.optim.lr = 3e-4
    c.optim.warmup_steps = 500
    c.train.steps = 100 * 390
    c.train.checkpoint_every = 5000
    c.train.knn_every = 5000
  elif arg == 'imagenet':
    c.model.backbone = 'resnet50'
    c.data.source = 'tfds'
    c.data.name = 'imagenet2012'
    c.data.image_size = 224
    c.data.crop_scale = (0.08, 1.0)
    c.data.eval_crop_frac = 0.875
    c.data.batch_size = 320
    c.data.num_workers = 16
    c.optim.warmup_steps = 2000
    c.train.steps = 450_000
    c.train.checkpoint_every = 5000
    c.train.knn_every = 25000
    c.eval.batch_size = 1024
  else:
    raise ValueError(f"unknown variant {arg!r} of configs/colorization.py; use 'builtin', "
                     "'cifar10' or 'imagenet'")
  return c
