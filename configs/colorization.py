"""Colorful Image Colorization (Zhang et al. 2016), class-rebalanced classification over the
quantised ab bins.

Variants (``--config=configs/colorization.py:<variant>``):

* ``builtin`` — width-16 CIFAR-stem ResNet-18 at 24 px on the built-in ``mnist5k_color`` set (the
  MNIST-5k digits drawn in a class-dependent colour: the grey digits have no colour to learn, and
  colour that depends on what the object is makes colorization learn to recognise it)::

      python -m ssl_jax.main --config=configs/colorization.py:builtin --workdir=/tmp/color_builtin

* ``cifar10`` — ResNet-18 (CIFAR stem) at 32 px, batch 128, Adam lr 3e-5 x (paper: Adam, lr 3e-5,
  betas (0.9, 0.99), weight decay 1e-3)::

      python -m ssl_jax.main --config=configs/colorization.py:cifar10 --workdir=gs://BUCKET/color_c10

* ``imagenet`` — ResNet-50 at 224 px (the paper used a VGG-style net at 256 px), batch 40 x 8
  devices as the paper's 40, Adam lr 3e-5, 450k iterations::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/colorization.py:imagenet --workdir=gs://BUCKET/color_in1k
"""
from configs import _common as common
from ssl_jax import config as config_lib


@common.takes_backbone
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
    common.builtin_data(c, image_size=24, crop_scale=(0.5, 1.0), batch_size=128)
    c.data.name = 'mnist5k_color'   # digits drawn in a class-dependent colour
    common.cifar_resnet18(c, width=16)
    c.method.decoder_dim = 32
    c.method.prior_images = 200
    c.optim.lr = 1e-3
    common.schedule(c, steps=300, warmup_steps=20, checkpoint_every=100)
  elif arg == 'cifar10':
    common.cifar10_data(c, crop_scale=(0.5, 1.0), batch_size=128)
    common.cifar_resnet18(c)
    c.optim.lr = 3e-4
    common.schedule(c, steps=100 * 390, warmup_steps=500, checkpoint_every=5000, knn_every=5000)
  elif arg == 'imagenet':
    common.imagenet_data(c, crop_scale=(0.08, 1.0), batch_size=320)
    c.model.backbone = 'resnet50'
    common.schedule(c, steps=450_000, warmup_steps=2000, checkpoint_every=5000, knn_every=25000)
  else:
    raise common.unknown_variant('colorization', arg)
  return c
