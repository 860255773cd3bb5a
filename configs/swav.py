"""SwAV (Caron et al. 2020).

Variants (``--config=configs/swav.py:<variant>``):

* ``builtin`` — width-8 CIFAR-stem ResNet-18 on the built-in MNIST-5k set, multi-crop 2 x 16px
  (scale 0.3-1) + 2 x 12px (scale 0.2-0.5), 30 prototypes, epsilon 0.02, batch 256, LARS lr 0.6,
  300 steps, prototypes frozen for the first 20. About 3 minutes on a 2-core CPU. With so few
  prototypes and steps the paper's epsilon 0.05 gives soft codes that drift to uniform (every
  embedding equidistant to all prototypes, loss = log K: the collapse the official README fixes by
  lowering epsilon), and 8px local crops of 16px digits carry too little to predict the codes::

      python -m ssl_jax.main --config=configs/swav.py:builtin --workdir=/tmp/swav_builtin

* ``cifar10`` — ResNet-18 (CIFAR stem), multi-crop 2 x 32px (scale 0.14-1) + 4 x 16px (scale
  0.05-0.14), 3000 prototypes, batch 256 with a 3840-feature queue from epoch 15, prototypes frozen
  for the first epoch, LARS lr 0.6, weight decay 1e-6, 500 epochs (the paper has no CIFAR
  setting: its batch-256 ImageNet recipe with the crops scaled to 32px)::

      python -m ssl_jax.main --config=configs/swav.py:cifar10 --workdir=gs://BUCKET/swav_c10

* ``imagenet`` — the paper's 800-epoch setting (official swav_800ep_pretrain.sh): ResNet-50,
  multi-crop 2 x 224 (scale 0.14-1) + 6 x 96 (scale 0.05-0.14), 3000 prototypes, epsilon 0.05,
  3 Sinkhorn iterations, temperature 0.1, batch 4096 (no queue), LARS lr 4.8 with 10 warmup
  epochs and cosine to 0.0048, weight decay 1e-6, prototypes frozen for the first 313 iterations::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/swav.py:imagenet --workdir=gs://BUCKET/swav_in1k
"""
from configs import _common as common
from ssl_jax import config as config_lib


@common.takes_backbone
def get_config(arg: str = 'builtin'):
  c = config_lib.base_config()
  c.method.name = 'swav'
  c.method.temperature = 0.1
  c.method.epsilon = 0.05
  c.method.sinkhorn_iterations = 3
  c.method.num_prototypes = 3000
  c.method.proj_hidden_dim = 2048
  c.method.proj_dim = 128
  c.method.num_local = 6
  c.method.local_size = 96
  c.method.local_scale = (0.05, 0.14)
  c.method.queue_length = 0          # 0: no queue
  c.method.queue_start_step = 0      # the queue starts filling at this step, is used once full
  c.method.freeze_prototypes_steps = 0
  c.data.crop_scale = (0.14, 1.0)    # global crops
  c.aug.recipe = 'simclr'            # SwAV: colour distortion s = 1 + blur p 0.5 on every crop
  c.optim.name = 'lars'

  if arg == 'builtin':
    common.builtin_data(c, image_size=16, crop_scale=(0.3, 1.0), batch_size=256)
    common.cifar_resnet18(c, width=8)
    c.method.num_prototypes = 30
    c.method.proj_hidden_dim = 512
    c.method.epsilon = 0.02            # 0.05 collapses to uniform codes here (see above)
    c.method.num_local = 2
    c.method.local_size = 12
    c.method.local_scale = (0.2, 0.5)
    c.method.freeze_prototypes_steps = 20
    c.optim.lr = 0.6
    c.optim.weight_decay = 1e-6
    common.schedule(c, steps=300, warmup_steps=20, checkpoint_every=100)
  elif arg == 'cifar10':
    common.cifar10_data(c, batch_size=256)
    common.cifar_resnet18(c)
    c.method.num_local = 4
    c.method.local_size = 16
    c.method.queue_length = 3840
    c.method.queue_start_step = 15 * 195
    c.method.freeze_prototypes_steps = 195
    c.optim.lr = 0.6
    c.optim.weight_decay = 1e-6
    c.optim.min_lr_ratio = 0.001
    common.schedule(c, steps=500 * 195, warmup_steps=10 * 195, checkpoint_every=5000,
                    knn_every=10000)
  elif arg == 'imagenet':
    common.imagenet_data(c, batch_size=4096)
    c.model.backbone = 'resnet50'
    c.method.freeze_prototypes_steps = 313
    c.optim.lr = 4.8
    c.optim.lr_scaling = 'none'      # 4.8 is the lr of the 4096 batch
    c.optim.weight_decay = 1e-6
    c.optim.min_lr_ratio = 0.001
    common.schedule(c, steps=800 * 312, warmup_steps=10 * 312, checkpoint_every=1000,
                    knn_every=5000)
  else:
    raise common.unknown_variant('swav', arg)
  return c
