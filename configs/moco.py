"""MoCo v1 / v2 (He et al. 2020; Chen et al. 2020, "Improved Baselines with Momentum Contrastive
Learning"). MoCo v3 has its own file, configs/mocov3.py.

Variants (``--config=configs/moco.py:<variant>``); the plain names are MoCo v2, ``v1_`` ones v1:

* ``builtin`` — MoCo v2 quickstart: width-16 CIFAR-stem ResNet-18 on the built-in MNIST-5k set,
  24x24 crops, batch 256, queue 4096, 300 steps; momentum 0.99 because the run is short.
  A few minutes on a 2-core CPU::

      python -m ssl_jax.main --config=configs/moco.py:builtin --workdir=/tmp/moco_builtin

* ``v1_builtin`` — the same with MoCo v1's linear head, tau 0.07, 'mocov1' augmentation, step lr.
* ``cifar10`` — MoCo v2 on CIFAR-10 with the settings of the official CIFAR demo: ResNet-18
  (CIFAR stem), batch 512, SGD lr 0.06 x B/256, wd 5e-4, K 4096, m 0.99, tau 0.1, 800 epochs::

      python -m ssl_jax.main --config=configs/moco.py:cifar10 --workdir=gs://BUCKET/moco_c10

* ``imagenet`` — MoCo v2 (Chen et al. 2020, Table 1 / official ``--mlp --aug-plus --cos``):
  ResNet-50, batch 256, SGD lr 0.03, wd 1e-4, K 65536, m 0.999, tau 0.2, 200 epochs, cosine::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/moco.py:imagenet --workdir=gs://BUCKET/mocov2_in1k

* ``v1_imagenet`` — MoCo v1 (He et al. 2020, Sec. 4): linear 128-d head, tau 0.07, lr 0.03
  stepped x0.1 at epochs 120 and 160 of 200, the InstDis augmentation.
"""
from configs import _common as common
from configs import _folder as folder
from ssl_jax import config as config_lib

_IMAGENET_STEPS_PER_EPOCH_B256 = 5005


def _v1(c):
  c.method.version = 1
  c.method.proj_layers = 1
  c.method.temperature = 0.07
  c.method.lr_schedule = 'step'
  c.aug.recipe = 'mocov1'
  c.optim.name = 'sgd'
  c.optim.warmup_steps = 0
  return c


def folder_config(arg: str):
  """``folder,PATH[,MINUTES]``: the recipe chosen from the user's images (configs/_folder.py) on
  top of the builtin (short budgets) or cifar10 MoCo v2 settings; the queue holds at most half
  the training images (a larger one keeps other views of the query's own image as negatives)."""
  c = get_config(folder.base_variant(arg))
  r = folder.configure(c, arg)
  n = folder.folder_lib.folder_stats(c.data.path).num_images
  c.method.queue_size = max(r.batch_size, min(c.method.queue_size, n // 2) // r.batch_size
                            * r.batch_size)
  return c


@common.takes_backbone
def get_config(arg: str = 'builtin'):
  if arg.startswith('folder'):
    return folder_config(arg)
  c = config_lib.base_config()
  c.method.name = 'moco'
  c.method.version = 2               # documentation only: v1/v2 differ by the fields below
  c.method.temperature = 0.2
  c.method.queue_size = 65536
  c.method.momentum = 0.999
  c.method.momentum_final = 0.999    # constant momentum (MoCo)
  c.method.proj_layers = 2           # v2: Dense(2048)-ReLU-Dense(128), no BN
  c.method.proj_hidden_dim = 2048
  c.method.proj_dim = 128
  c.method.proj_bn = False
  c.method.lr_schedule = 'cosine'
  c.aug.recipe = 'mocov2'
  c.data.crop_scale = (0.2, 1.0)
  c.optim.name = 'sgd'
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.warmup_steps = 0

  variant = arg[3:] if arg.startswith('v1_') else arg
  if variant == 'builtin':
    common.builtin_data(c, image_size=24, crop_scale=(0.3, 1.0), batch_size=256)
    common.cifar_resnet18(c, width=16)
    c.method.queue_size = 4096
    c.method.momentum = c.method.momentum_final = 0.99
    c.method.proj_hidden_dim = 512
    c.optim.lr = 0.3
    c.optim.weight_decay = 5e-4
    common.schedule(c, steps=300, warmup_steps=10, checkpoint_every=100)
  elif variant == 'cifar10':
    common.cifar10_data(c, batch_size=512)
    common.cifar_resnet18(c)
    c.method.queue_size = 4096
    c.method.momentum = c.method.momentum_final = 0.99
    c.method.temperature = 0.1
    c.method.proj_hidden_dim = 512
    c.aug.overrides = {'blur': None}   # no blur at 32x32 (as the demo)
    c.optim.lr = 0.03                  # x 512/256 = the demo's 0.06 at batch 512
    c.optim.weight_decay = 5e-4
    common.schedule(c, steps=800 * 97, checkpoint_every=5000, knn_every=10000)
  elif variant == 'imagenet':
    common.imagenet_data(c, batch_size=256)
    c.model.backbone = 'resnet50'
    c.optim.lr = 0.03
    common.schedule(c, steps=200 * _IMAGENET_STEPS_PER_EPOCH_B256, checkpoint_every=5000,
                    knn_every=50000)
  else:
    raise common.unknown_variant('moco', arg, choices="'builtin', 'cifar10', 'imagenet' (MoCo v2) "
                                 "or 'v1_builtin', 'v1_cifar10', 'v1_imagenet' (MoCo v1)")
  if arg.startswith('v1_'):
    _v1(c)
  return c
