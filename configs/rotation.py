"""RotNet: rotation prediction (Gidaris et al. 2018).

Variants (``--config=configs/rotation.py:<variant>``):

* ``builtin`` — width-16 CIFAR-stem ResNet-18 on the built-in MNIST-5k set, 24 px crops,
  128 images x 4 rotations per step, SGD. A few minutes on a 2-core CPU::

      python -m ssl_jax.main --config=configs/rotation.py:builtin --workdir=/tmp/rotnet_builtin

* ``cifar10`` — ResNet-18 (CIFAR stem), 128 images x 4 rotations, SGD lr 0.1 (Nesterov in the
  paper), weight decay 5e-4, 100 epochs (the paper's CIFAR schedule with NIN, Sec. 4.1)::

      python -m ssl_jax.main --config=configs/rotation.py:cifar10 --workdir=gs://BUCKET/rotnet_c10

* ``imagenet`` — ResNet-50, 192 images x 4 rotations (paper Sec. 4.2: batch 192, SGD momentum 0.9,
  lr 0.1, weight decay 5e-4, 30 epochs)::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/rotation.py:imagenet --workdir=gs://BUCKET/rotnet_in1k
"""
from configs import _common as common
from ssl_jax import config as config_lib


@common.takes_backbone
def get_config(arg: str = 'builtin'):
  c = config_lib.base_config()
  c.method.name = 'rotation'
  c.method.head_layers = 2
  c.method.head_hidden_dim = 256
  c.aug.recipe = 'none'           # the rotation is the only transformation (paper)
  c.optim.name = 'sgd'
  c.optim.lr = 0.1
  c.optim.lr_scaling = 'none'
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4

  if arg == 'builtin':
    # no flips: a mirrored digit would make some rotations ambiguous
    common.builtin_data(c, image_size=24, crop_scale=(0.5, 1.0), batch_size=128)
    common.cifar_resnet18(c, width=16)
    c.optim.lr = 0.05
    common.schedule(c, steps=300, warmup_steps=20, checkpoint_every=100)
  elif arg == 'cifar10':
    common.cifar10_data(c, crop_scale=(0.5, 1.0), batch_size=128)
    common.cifar_resnet18(c)
    common.schedule(c, steps=100 * 390, warmup_steps=390, checkpoint_every=5000, knn_every=5000)
  elif arg == 'imagenet':
    common.imagenet_data(c, crop_scale=(0.08, 1.0), batch_size=192)
    c.model.backbone = 'resnet50'
    common.schedule(c, steps=30 * 6672, warmup_steps=6672, checkpoint_every=5000,
                    knn_every=20000)
  else:
    raise common.unknown_variant('rotation', arg)
  return c
