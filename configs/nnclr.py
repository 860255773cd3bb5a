"""NNCLR (Dwibedi et al. 2021).

Variants (``--config=configs/nnclr.py:<variant>``):

* ``builtin`` — quickstart: width-16 CIFAR-stem ResNet-18 on the built-in MNIST-5k set, 16x16
  crops, batch 256, support set 2048, LARS, 200 steps. A few minutes on a CPU::

      python -m ssl_jax.main --config=configs/nnclr.py:builtin --workdir=/tmp/nnclr_builtin

* ``cifar10`` — ResNet-18 (CIFAR stem), batch 512, LARS lr 0.4 x B/256, wd 1e-5, tau 0.2,
  support set 65536, 800 epochs (solo-learn's CIFAR settings)::

      python -m ssl_jax.main --config=configs/nnclr.py:cifar10 --workdir=gs://BUCKET/nnclr_c10

* ``imagenet`` — the paper (Sec. 4.1): ResNet-50, batch 4096, LARS lr 0.3 x B/256 (= 4.8),
  wd 1e-6, 10 warmup epochs, 1000 epochs, tau 0.1, support set 98304, projector 3 layers
  2048 -> 256, predictor 4096 -> 256, BYOL augmentations::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/nnclr.py:imagenet --workdir=gs://BUCKET/nnclr_in1k
"""
import ml_collections

from configs import _common as common
from ssl_jax import config as config_lib


@common.takes_backbone
def get_config(arg: str = 'builtin'):
  c = config_lib.base_config()
  c.method.name = 'nnclr'
  c.method.temperature = 0.1
  c.method.support_size = 98304
  c.method.proj_layers = 3
  c.method.proj_hidden_dim = 2048
  c.method.proj_dim = 256
  c.method.proj_last_bn = True
  c.method.pred_layers = 2
  c.method.pred_hidden_dim = 4096
  c.method.pred_dim = 256
  c.aug = ml_collections.ConfigDict({'recipe': ('byol_view1', 'byol_view2')})  # asymmetric views
  c.data.crop_scale = (0.08, 1.0)
  c.optim.name = 'lars'

  if arg == 'builtin':
    # 16 px and 200 steps: a few minutes even on a loaded CPU
    common.builtin_data(c, image_size=16, crop_scale=(0.3, 1.0), batch_size=256)
    common.cifar_resnet18(c, width=16)
    c.method.temperature = 0.2
    c.method.support_size = 2048
    c.method.proj_layers = 2
    c.method.proj_hidden_dim = 512
    c.method.proj_dim = 128
    c.method.pred_hidden_dim = 512
    c.method.pred_dim = 128
    c.optim.lr = 1.0
    common.schedule(c, steps=200, warmup_steps=20, checkpoint_every=100)
  elif arg == 'cifar10':
    common.cifar10_data(c, batch_size=512)
    common.cifar_resnet18(c)
    c.method.temperature = 0.2
    c.method.support_size = 65536
    c.optim.lr = 0.4
    c.optim.weight_decay = 1e-5
    common.schedule(c, steps=800 * 97, warmup_steps=10 * 97, checkpoint_every=5000,
                    knn_every=10000)
  elif arg == 'imagenet':
    common.imagenet_data(c, batch_size=4096)
    c.model.backbone = 'resnet50'
    c.optim.lr = 0.3
    c.optim.weight_decay = 1e-6
    common.schedule(c, steps=1000 * 312, warmup_steps=10 * 312, checkpoint_every=1000,
                    knn_every=5000)
  else:
    raise common.unknown_variant('nnclr', arg)
  return c
