"""SimCLR (Chen et al. 2020).

Variants (``--config=configs/simclr.py:<variant>``):

* ``builtin`` — the quickstart: a width-16 CIFAR-stem ResNet-18 on the built-in MNIST-5k set,
  32x32 crops, batch 256, LARS. Runs on a 2-core CPU in a few minutes::

      python -m ssl_jax.main --config=configs/simclr.py:builtin --workdir=/tmp/simclr_builtin

* ``cifar10`` — ResNet-18 (CIFAR stem), batch 512, 800 epochs, temperature 0.5 (SimCLR App. B.9)::

      python -m ssl_jax.main --config=configs/simclr.py:cifar10 --workdir=gs://BUCKET/simclr_c10

* ``imagenet`` — ResNet-50, batch 4096, LARS lr 0.3 x B/256, temperature 0.1, 100 epochs::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/simclr.py:imagenet --workdir=gs://BUCKET/simclr_in1k
"""
from ssl_jax import config as config_lib


def get_config(arg: str = 'builtin'):
  c = config_lib.base_config()
  c.method.name = 'simclr'
  c.method.temperature = 0.2
  c.method.proj_hidden_dim = 512
  c.method.proj_dim = 128
  c.method.proj_layers = 2
  c.aug.recipe = 'simclr'
  c.optim.name = 'lars'

  if arg == 'builtin':
    c.model.backbone = 'resnet18'
    c.model.width = 16
    c.model.cifar_stem = True
    c.data.source = 'builtin'
    c.data.name = 'mnist5k'
    c.data.image_size = 24
    c.data.crop_scale = (0.3, 1.0)
    c.data.flip = 0.0            # digits are not mirror-symmetric
    c.data.batch_size = 256
    c.optim.lr = 1.0
    c.optim.warmup_steps = 20
    c.train.steps = 300
    c.train.log_every = 10
    c.train.checkpoint_every = 100
  elif arg == 'cifar10':
    c.model.backbone = 'resnet18'
    c.model.cifar_stem = True
    c.method.temperature = 0.5
    c.method.proj_hidden_dim = 2048
    c.data.source = 'tfds'
    c.data.name = 'cifar10'
    c.data.image_size = 32
    c.data.batch_size = 512
    c.optim.lr = 1.0
    c.optim.weight_decay = 1e-6
    c.optim.warmup_steps = 10 * 97
    c.train.steps = 800 * 97
    c.train.checkpoint_every = 5000
    c.train.knn_every = 10000
  elif arg == 'imagenet':
    c.model.backbone = 'resnet50'
    c.method.temperature = 0.1
    c.method.proj_hidden_dim = 2048
    c.method.proj_layers = 3
    c.data.source = 'tfds'
    c.data.name = 'imagenet2012'
    c.data.image_size = 224
    c.data.eval_crop_frac = 0.875
    c.data.batch_size = 4096
    c.data.num_workers = 16
    c.optim.lr = 0.3
    c.optim.weight_decay = 1e-6
    c.optim.warmup_steps = 10 * 312
    c.train.steps = 100 * 312
    c.train.checkpoint_every = 1000
    c.train.knn_every = 5000
    c.eval.batch_size = 1024
  else:
    raise ValueError(f"unknown variant {arg!r} of configs/simclr.py; use 'builtin', 'cifar10' "
                     "or 'imagenet'")
  return c
