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
from ssl_jax import config as config_lib


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
    c.model.backbone = 'resnet18'
    c.model.width = 16
    c.model.cifar_stem = True
    c.data.source = 'builtin'
    c.data.name = 'mnist5k'
    c.data.image_size = 16       # 16 px and 200 steps: a few minutes even on a loaded CPU
    c.data.crop_scale = (0.3, 1.0)
    c.data.flip = 0.0
    c.data.batch_size = 256
    c.method.proj_layers = 2
    c.method.proj_hidden_dim = 512
    c.method.proj_dim = 512
    c.method.pred_hidden_dim = 128
    c.method.pred_dim = 512
    c.optim.lr = 0.5             # 0.1 reached only err ratio 0.78 in 200 steps; 0.5: 0.33
    c.optim.weight_decay = 5e-4
    c.optim.warmup_steps = 10
    c.train.steps = 200
    c.train.log_every = 10
    c.train.checkpoint_every = 100
  elif arg == 'cifar10':
    c.model.backbone = 'resnet18'
    c.model.cifar_stem = True
    c.method.proj_layers = 2
    c.method.fix_pred_lr = False
    c.aug.overrides = {'blur': None}
    c.data.source = 'tfds'
    c.data.name = 'cifar10'
    c.data.image_size = 32
    c.data.batch_size = 512
    c.optim.lr = 0.03
    c.optim.weight_decay = 5e-4
    c.train.steps = 800 * 97
    c.train.checkpoint_every = 5000
    c.train.knn_every = 10000
  elif arg == 'imagenet':
    c.model.backbone = 'resnet50'
    c.data.source = 'tfds'
    c.data.name = 'imagenet2012'
    c.data.image_size = 224
    c.data.eval_crop_frac = 0.875
    c.data.batch_size = 512
    c.data.num_workers = 16
    c.optim.lr = 0.05
    c.train.steps = 100 * 2502
    c.train.checkpoint_every = 5000
    c.train.knn_every = 25000
    c.eval.batch_size = 1024
  else:
    raise ValueError(f"unknown variant {arg!r} of configs/simsiam.py; use 'builtin', 'cifar10' "
                     "or 'imagenet'")
  return c
