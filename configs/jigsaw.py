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
from ssl_jax import config as config_lib


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
    c.model.backbone = 'resnet18'
    c.model.width = 16
    c.model.cifar_stem = True
    c.method.num_permutations = 100
    c.method.tile_size = 8
    c.method.tile_dim = 64
    c.method.head_hidden_dim = 256
    c.data.name = 'mnist5k'
    c.data.image_size = 30
    c.data.crop_scale = (0.6, 1.0)
    c.data.flip = 0.0
    c.data.batch_size = 128
    c.optim.lr = 0.05
    c.optim.warmup_steps = 20
    c.train.steps = 200
    c.train.checkpoint_every = 100
  elif arg == 'cifar10':
    c.model.backbone = 'resnet18'
    c.model.cifar_stem = True
    c.method.tile_size = 14
    c.data.source = 'tfds'
    c.data.name = 'cifar10'
    c.data.image_size = 48
    c.data.crop_scale = (0.6, 1.0)
    c.data.batch_size = 256
    c.optim.warmup_steps = 500
    c.train.steps = 100 * 195
    c.train.checkpoint_every = 5000
    c.train.knn_every = 5000
  elif arg == 'imagenet':
    c.model.backbone = 'resnet50'
    c.method.tile_size = 64
    c.data.source = 'tfds'
    c.data.name = 'imagenet2012'
    c.data.image_size = 225
    c.data.crop_scale = (0.08, 1.0)
    c.data.eval_crop_frac = 0.875
    c.data.batch_size = 256
    c.data.num_workers = 16
    c.optim.warmup_steps = 2000
    c.train.steps = 350_000
    c.train.checkpoint_every = 5000
    c.train.knn_every = 25000
    c.eval.batch_size = 1024
  else:
    raise ValueError(f"unknown variant {arg!r} of configs/jigsaw.py; use 'builtin', 'cifar10' "
                     "or 'imagenet'")
  return c
