"""MoCo v3 (Chen, Xie & He 2021).

Variants (``--config=configs/mocov3.py:<variant>``):

* ``builtin`` — quickstart: width-16 CIFAR-stem ResNet-18 on the built-in MNIST-5k set, 16x16
  crops, batch 256, LARS, 200 steps, momentum 0.99 -> 1, tau 0.2. A few minutes on a CPU::

      python -m ssl_jax.main --config=configs/mocov3.py:builtin --workdir=/tmp/mocov3_builtin

* ``builtin_vit`` — the same with a small ViT (embed 96, depth 4, patch 4), AdamW, and the
  frozen random patch projection.
* ``cifar10`` — ResNet-18 (CIFAR stem), batch 512, LARS lr 0.3 x B/256, wd 1e-6, tau 0.2,
  momentum 0.99 -> 1, 800 epochs::

      python -m ssl_jax.main --config=configs/mocov3.py:cifar10 --workdir=gs://BUCKET/mocov3_c10

* ``imagenet`` — the official ResNet-50 recipe (100 epochs): batch 4096, LARS lr 0.6 x B/256,
  wd 1e-6, 10 warmup epochs, tau 1.0, momentum 0.99 -> 1 (cosine), projector 2 layers
  4096 -> 256 (last BN without affine), predictor 2 layers 4096 -> 256, BYOL augmentations::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/mocov3.py:imagenet --workdir=gs://BUCKET/mocov3_r50_in1k

* ``imagenet_vit`` — ViT-S/16 (Table/README of the paper's code): batch 1024, AdamW lr
  1.5e-4 x B/256, wd 0.1, 40 warmup epochs, 300 epochs, tau 0.2, frozen random patch projection
  (``--stop-grad-conv1``), sin-cos position embedding, projector 3 layers::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/mocov3.py:imagenet_vit --workdir=gs://BUCKET/mocov3_vits_in1k
"""
import ml_collections

from configs import _common as common
from ssl_jax import config as config_lib


@common.takes_backbone
def get_config(arg: str = 'builtin'):
  c = config_lib.base_config()
  c.method.name = 'mocov3'
  c.method.temperature = 1.0
  c.method.momentum = 0.99
  c.method.momentum_final = 1.0
  c.method.proj_layers = 2
  c.method.proj_hidden_dim = 4096
  c.method.proj_dim = 256
  c.method.proj_last_bn = True
  c.method.proj_last_bn_affine = False
  c.method.pred_layers = 2
  c.method.pred_hidden_dim = 4096
  c.method.pred_dim = 256
  c.aug = ml_collections.ConfigDict({'recipe': ('byol_view1', 'byol_view2')})  # asymmetric views
  c.data.crop_scale = (0.08, 1.0)
  c.optim.name = 'lars'
  c.optim.weight_decay = 1e-6

  if arg in ('builtin', 'builtin_vit'):
    # 16 px and 200 steps: a few minutes even on a loaded CPU
    common.builtin_data(c, image_size=16, crop_scale=(0.3, 1.0), batch_size=256)
    common.cifar_resnet18(c, width=16)
    c.method.temperature = 0.2
    c.method.proj_hidden_dim = 512
    c.method.proj_dim = 128
    c.method.pred_hidden_dim = 512
    c.method.pred_dim = 128
    c.optim.lr = 1.0
    common.schedule(c, steps=200, warmup_steps=20, checkpoint_every=100)
    if arg == 'builtin_vit':
      _vit(c, 'vit_tiny', patch=4)
      c.model.embed_dim, c.model.depth, c.model.num_heads = 96, 4, 3
      c.optim.lr = 1e-3
      c.optim.weight_decay = 0.05
  elif arg == 'cifar10':
    common.cifar10_data(c, batch_size=512)
    common.cifar_resnet18(c)
    c.method.temperature = 0.2
    c.optim.lr = 0.3
    common.schedule(c, steps=800 * 97, warmup_steps=10 * 97, checkpoint_every=5000,
                    knn_every=10000)
  elif arg in ('imagenet', 'imagenet_vit'):
    common.imagenet_data(c, batch_size=4096)
    c.model.backbone = 'resnet50'
    c.optim.lr = 0.6
    common.schedule(c, steps=100 * 312, warmup_steps=10 * 312, checkpoint_every=1000,
                    knn_every=5000)
    if arg == 'imagenet_vit':
      _vit(c, 'vit_small', patch=16)
      c.data.batch_size = 1024
      c.method.temperature = 0.2
      c.optim.lr = 1.5e-4
      c.optim.weight_decay = 0.1
      c.optim.warmup_steps = 40 * 1251
      c.train.steps = 300 * 1251
  else:
    raise common.unknown_variant('mocov3', arg, choices="'builtin', 'builtin_vit', 'cifar10', "
                                 "'imagenet' or 'imagenet_vit'")
  return c


def _vit(c, backbone: str, patch: int):
  """MoCo v3's ViT settings: AdamW, frozen random patch projection, sin-cos positions, 3-layer
  projector."""
  common.vit(c, backbone, patch_size=patch)
  c.model.frozen_patch_embed = True
  c.model.pos_embed = 'sincos'
  c.method.proj_layers = 3
  c.optim.name = 'adamw'
  c.optim.b2 = 0.999

