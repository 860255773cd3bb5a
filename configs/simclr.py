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
from configs import _common as common
from configs import _folder as folder
from ssl_jax import config as config_lib


def folder_config(arg: str):
  """``folder,PATH[,MINUTES]``: the recipe chosen from the user's images (configs/_folder.py) on
  top of the builtin (short budgets) or cifar10 method settings::

      python -m ssl_jax.main --config=configs/simclr.py:folder,/data/my_images,10 --workdir=/tmp/x
  """
  c = get_config(folder.base_variant(arg))
  r = folder.configure(c, arg)
  if r.short_run:
    # The builtin's LARS lr 1.0 as it is, not scaled down to the folder's smaller batch: linear
    # scaling gave 0.25 at batch 64, and the held-out textures then reached kNN 0.255 in 10 min;
    # unscaled, 0.637 (random encoder 0.147; docs/own-data.md).
    c.optim.lr_scaling = 'none'
  return c


@common.takes_backbone
def get_config(arg: str = 'builtin'):
  if arg.startswith('folder'):
    return folder_config(arg)
  c = config_lib.base_config()
  c.method.name = 'simclr'
  c.method.temperature = 0.2
  c.method.proj_hidden_dim = 512
  c.method.proj_dim = 128
  c.method.proj_layers = 2
  c.aug.recipe = 'simclr'
  c.optim.name = 'lars'

  if arg == 'builtin':
    common.builtin_data(c, image_size=24, crop_scale=(0.3, 1.0), batch_size=256)
    common.cifar_resnet18(c, width=16)
    c.optim.lr = 1.0
    common.schedule(c, steps=300, warmup_steps=20, checkpoint_every=100)
  elif arg == 'cifar10':
    common.cifar10_data(c, batch_size=512)
    common.cifar_resnet18(c)
    c.method.temperature = 0.5
    c.method.proj_hidden_dim = 2048
    c.optim.lr = 1.0
    c.optim.weight_decay = 1e-6
    common.schedule(c, steps=800 * 97, warmup_steps=10 * 97, checkpoint_every=5000,
                    knn_every=10000)
  elif arg == 'imagenet':
    common.imagenet_data(c, batch_size=4096)
    c.model.backbone = 'resnet50'
    c.method.temperature = 0.1
    c.method.proj_hidden_dim = 2048
    c.method.proj_layers = 3
    c.optim.lr = 0.3
    c.optim.weight_decay = 1e-6
    common.schedule(c, steps=100 * 312, warmup_steps=10 * 312, checkpoint_every=1000,
                    knn_every=5000)
  else:
    raise common.unknown_variant('simclr', arg)
  return c
