"""Barlow Twins (Zbontar et al. 2021).

Variants (``--config=configs/barlow_twins.py:<variant>``):

* ``builtin`` — width-8 CIFAR-stem ResNet-18 on the built-in MNIST-5k set, 16x16 crops, batch 256,
  a 512-512-512 projector. A few minutes on a 2-core CPU::

      python -m ssl_jax.main --config=configs/barlow_twins.py:builtin --workdir=/tmp/bt_builtin

* ``cifar10`` — ResNet-18 (CIFAR stem), 2048-2048-2048 projector, batch 256, LARS lr 0.3, weight
  decay 1e-4, 1000 epochs (the solo-learn CIFAR recipe)::

      python -m ssl_jax.main --config=configs/barlow_twins.py:cifar10 --workdir=gs://BUCKET/bt_c10

* ``imagenet`` — the paper's setting: ResNet-50, 8192-8192-8192 projector, lambda 0.0051,
  batch 2048, LARS base lr 0.2 x B/256, weight decay 1.5e-6, 10 warmup epochs, cosine to 1/1000,
  1000 epochs, BYOL's asymmetric augmentations (Zbontar et al. 2021 Sec. 4, official code). The
  paper's separate bias/BN lr (0.0048) is not reproduced: biases and norms share the weights' lr
  but get no weight decay and no LARS adaptation::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/barlow_twins.py:imagenet --workdir=gs://BUCKET/bt_in1k
"""
import ml_collections

from ssl_jax import config as config_lib


def get_config(arg: str = 'builtin'):
  c = config_lib.base_config()
  c.method.name = 'barlow_twins'
  c.method.lambd = 0.0051
  c.method.proj_hidden_dim = 8192
  c.method.proj_dim = 8192
  c.method.proj_layers = 3
  # BYOL's asymmetric views; a per-view tuple replaces the base's single-name field.
  c.aug = ml_collections.ConfigDict({'recipe': ('byol_view1', 'byol_view2')})
  c.optim.name = 'lars'

  if arg == 'builtin':
    c.model.backbone = 'resnet18'
    c.model.width = 8
    c.model.cifar_stem = True
    c.method.proj_hidden_dim = 512
    c.method.proj_dim = 512
    c.data.source = 'builtin'
    c.data.name = 'mnist5k'
    c.data.image_size = 16
    c.data.crop_scale = (0.3, 1.0)
    c.data.flip = 0.0            # digits are not mirror-symmetric
    c.data.batch_size = 256
    c.optim.lr = 0.3
    c.optim.weight_decay = 1e-5
    c.optim.warmup_steps = 20
    c.train.steps = 200
    c.train.log_every = 10
    c.train.checkpoint_every = 100
  elif arg == 'cifar10':
    c.model.backbone = 'resnet18'
    c.model.cifar_stem = True
    c.method.proj_hidden_dim = 2048
    c.method.proj_dim = 2048
    c.data.source = 'tfds'
    c.data.name = 'cifar10'
    c.data.image_size = 32
    c.data.batch_size = 256
    c.optim.lr = 0.3
    c.optim.weight_decay = 1e-4
    c.optim.warmup_steps = 10 * 195
    c.train.steps = 1000 * 195
    c.train.checkpoint_every = 5000
    c.train.knn_every = 10000
  elif arg == 'imagenet':
    c.model.backbone = 'resnet50'
    c.data.source = 'tfds'
    c.data.name = 'imagenet2012'
    c.data.image_size = 224
    c.data.eval_crop_frac = 0.875
    c.data.batch_size = 2048
    c.data.num_workers = 16
    c.optim.lr = 0.2
    c.optim.weight_decay = 1.5e-6
    c.optim.min_lr_ratio = 0.001
    c.optim.warmup_steps = 10 * 625
    c.train.steps = 1000 * 625
    c.train.checkpoint_every = 2000
    c.train.knn_every = 10000
    c.eval.batch_size = 1024
  else:
    raise ValueError(f"unknown variant {arg!r} of configs/barlow_twins.py; use 'builtin', "
                     "'cifar10' or 'imagenet'")
  return c
