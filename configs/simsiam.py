"""SimSiam (Chen & He 2021).

Variants (``--config=configs/simsiam.py:<variant>``):

* ``builtin`` — quickstart: width-16 CIFAR-stem ResNet-18 on the built-in MNIST-5k set, 16x16
  crops, batch 256, 200 steps. A few minutes on a CPU::

      python -m ssl_jax.main --config=configs/simsiam.py:builtin --workdir=/tmp/simsiam_builtin

* ``cifar10`` — the paper's CIFAR setting (App. D): ResNet-18 (CIFAR stem), 2-layer projector
  (2048), batch 512, SGD lr 0.03 x B/256, wd 5e-4, 800 epochs, no blur::

      python -m ssl_jax.main --config=configs/simsiam.py:cifar10 --workdir=gs://BUCKET/simsiam_c10

* ``imagenet`` — the paper (Sec. 4): ResNet-50, batch 512, SGD lr 0.05 x B/256, wd 1e-4,
  momentum 0.9, cosine, fixed predictor lr, 100 epochs, projector 3 x 2048 (last BN without
  affine), predictor 2048-512-2048, MoCo v2 augmentation::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/simsiam.py:imagenet --workdir=gs://BUCKET/simsiam_in1k
"""
from configs import _common as common
from ssl_jax import config as config_lib


@common.takes_backbone
def get_config(arg: str = 'builtin'):
  c = config_lib.base_config()
  c.method.name = 'simsiam'
  c.method.proj_layers = 3
  c.method.proj_hidden_dim = 2048
  c.method.proj_dim = 2048
  c.method.proj_last_bn = True
  c.method.proj_last_bn_affine = False
  c.method.pred_layers = 2
  c.method.pred_hidden_dim = 512
  c.method.pred_dim = 2048
  c.method.fix_pred_lr = True
  c.aug.recipe = 'mocov2'
  c.data.crop_scale = (0.2, 1.0)
  c.optim.name = 'sgd'
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.warmup_steps = 0

  if arg == 'builtin':
    # 16 px and 200 steps: a few minutes even on a loaded CPU
    common.builtin_data(c, image_size=16, crop_scale=(0.3, 1.0), batch_size=256)
    common.cifar_resnet18(c, width=16)
    c.method.proj_layers = 2
    c.method.proj_hidden_dim = 512
    c.method.proj_dim = 512
    c.method.pred_hidden_dim = 128
    c.method.pred_dim = 512
    c.optim.lr = 0.5             # 0.1 reached only err ratio 0.78 in 200 steps; 0.5: 0.33
    c.optim.weight_decay = 5e-4
    common.schedule(c, steps=200, warmup_steps=10, checkpoint_every=100)
  elif arg == 'cifar10':
    common.cifar10_data(c, batch_size=512)
    common.cifar_resnet18(c)
    c.method.proj_layers = 2
    c.method.fix_pred_lr = False
    c.aug.overrides = {'blur': None}
    c.optim.lr = 0.03
    c.optim.weight_decay = 5e-4
    common.schedule(c, steps=800 * 97, checkpoint_every=5000, knn_every=10000)
  elif arg == 'imagenet':
    common.imagenet_data(c, batch_size=512)
    c.model.backbone = 'resnet50'
    c.optim.lr = 0.05
    common.schedule(c, steps=100 * 2502, checkpoint_every=5000, knn_every=25000)
  else:
    raise common.unknown_variant('simsiam', arg)
  return c
