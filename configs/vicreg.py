"""VICReg (Bardes, Ponce & LeCun 2022).

Variants (``--config=configs/vicreg.py:<variant>``):

* ``builtin`` — width-8 CIFAR-stem ResNet-18 on the built-in MNIST-5k set, 16x16 crops, batch 256,
  a 512-512-512 expander. A few minutes on a 2-core CPU::

      python -m ssl_jax.main --config=configs/vicreg.py:builtin --workdir=/tmp/vicreg_builtin

* ``cifar10`` — ResNet-18 (CIFAR stem), 2048-2048-2048 expander, batch 256, LARS lr 0.3, weight
  decay 1e-4, 1000 epochs (the solo-learn CIFAR recipe)::

      python -m ssl_jax.main --config=configs/vicreg.py:cifar10 --workdir=gs://BUCKET/vicreg_c10

* ``imagenet`` — the paper's setting: ResNet-50, 8192-8192-8192 expander, coefficients
  25 / 25 / 1, batch 2048, LARS base lr 0.2 x B/256, weight decay 1e-6, 10 warmup epochs, cosine to
  1/1000, 1000 epochs, BYOL's augmentations (Bardes et al. 2022 Sec. 4.1, official code)::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/vicreg.py:imagenet --workdir=gs://BUCKET/vicreg_in1k
"""
import ml_collections

from configs import _common as common
from ssl_jax import config as config_lib


@common.takes_backbone
def get_config(arg: str = 'builtin'):
  c = config_lib.base_config()
  c.method.name = 'vicreg'
  c.method.sim_coeff = 25.0
  c.method.std_coeff = 25.0
  c.method.cov_coeff = 1.0
  c.method.proj_hidden_dim = 8192
  c.method.proj_dim = 8192
  c.method.proj_layers = 3
  # BYOL's asymmetric views; a per-view tuple replaces the base's single-name field.
  c.aug = ml_collections.ConfigDict({'recipe': ('byol_view1', 'byol_view2')})
  c.optim.name = 'lars'

  if arg == 'builtin':
    common.builtin_data(c, image_size=16, crop_scale=(0.3, 1.0), batch_size=256)
    common.cifar_resnet18(c, width=8)
    c.method.proj_hidden_dim = 512
    c.method.proj_dim = 512
    c.optim.lr = 0.3
    c.optim.weight_decay = 1e-5
    common.schedule(c, steps=200, warmup_steps=20, checkpoint_every=100)
  elif arg == 'cifar10':
    common.cifar10_data(c, batch_size=256)
    common.cifar_resnet18(c)
    c.method.proj_hidden_dim = 2048
    c.method.proj_dim = 2048
    c.optim.lr = 0.3
    c.optim.weight_decay = 1e-4
    common.schedule(c, steps=1000 * 195, warmup_steps=10 * 195, checkpoint_every=5000,
                    knn_every=10000)
  elif arg == 'imagenet':
    common.imagenet_data(c, batch_size=2048)
    c.model.backbone = 'resnet50'
    c.optim.lr = 0.2
    c.optim.weight_decay = 1e-6
    c.optim.min_lr_ratio = 0.001
    common.schedule(c, steps=1000 * 625, warmup_steps=10 * 625, checkpoint_every=2000,
                    knn_every=10000)
  else:
    raise common.unknown_variant('vicreg', arg)
  return c
