"""Jigsaw puzzles (Noroozi & Favaro 2016) with a maximal-Hamming permutation set.

Variants (``--config=configs/jigsaw.py:<variant>``):

* ``builtin`` — width-16 CIFAR-stem ResNet-18 on the built-in MNIST-5k set: 30 px crops cut into
  3x3 cells of 10 px, 8 px tiles, 100 permutations. A few minutes on a 2-core CPU::

      python -m ssl_jax.main --config=configs/jigsaw.py:builtin --workdir=/tmp/jigsaw_builtin

* ``cifar10`` — ResNet-18 (CIFAR stem): 48 px upsampled crops, 3x3 cells of 16 px, 14 px tiles,
  1000 permutations, SGD lr 0.01 x B/256-free (paper)::

      python -m ssl_jax.main --config=configs/jigsaw.py:cifar10 --workdir=gs://BUCKET/jigsaw_c10

* ``imagenet`` — ResNet-50 on the paper's geometry: 225 px crops, 3x3 cells of 75 px, 64 px tiles,
  1000 permutations (Table 3's best), SGD lr 0.01, batch 256, 350k iterations (Sec. 3.2)::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/jigsaw.py:imagenet --workdir=gs://BUCKET/jigsaw_in1k
"""
from configs import _common as common
from ssl_jax import config as config_lib


@common.takes_backbone
def get_config(arg: str = 'builtin'):
  c = config_lib.base_config()
  c.method.name = 'jigsaw'
  c.method.grid = 3
  c.method.num_permutations = 1000
  c.method.permutation_seed = 0
  c.method.tile_dim = 512          # fc6 of the context-free network
  c.method.head_hidden_dim = 4096  # fc7
  c.aug.recipe = 'none'
  c.optim.name = 'sgd'
  c.optim.lr = 0.01
  c.optim.lr_scaling = 'none'
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4

  if arg == 'builtin':
    common.builtin_data(c, image_size=30, crop_scale=(0.6, 1.0), batch_size=128)
    common.cifar_resnet18(c, width=16)
    c.method.num_permutations = 100
    c.method.tile_size = 8
    c.method.tile_dim = 64
    c.method.head_hidden_dim = 256
    c.optim.lr = 0.05
    common.schedule(c, steps=200, warmup_steps=20, checkpoint_every=100)
  elif arg == 'cifar10':
    common.cifar10_data(c, image_size=48, crop_scale=(0.6, 1.0), batch_size=256)
    common.cifar_resnet18(c)
    c.method.tile_size = 14
    common.schedule(c, steps=100 * 195, warmup_steps=500, checkpoint_every=5000, knn_every=5000)
  elif arg == 'imagenet':
    common.imagenet_data(c, image_size=225, crop_scale=(0.08, 1.0), batch_size=256)
    c.model.backbone = 'resnet50'
    c.method.tile_size = 64
    common.schedule(c, steps=350_000, warmup_steps=2000, checkpoint_every=5000, knn_every=25000)
  else:
    raise common.unknown_variant('jigsaw', arg)
  return c
