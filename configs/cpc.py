"""CPC v2 (van den Oord et al. 2018; Henaff et al. 2020): predict patch latents rows below.

Variants (``--config=configs/cpc.py:<variant>``):

* ``builtin`` — width-16 CIFAR-stem ResNet-18 on 8 px patches at stride 4 of 24 px crops of the
  built-in MNIST-5k set (a 5x5 grid), predicting 1-2 rows below, batch 64, 300 steps, Adam lr
  1e-3 (no weight decay). About 12 minutes on a 2-core CPU shared with another run::

      python -m ssl_jax.main --config=configs/cpc.py:builtin --workdir=/tmp/cpc_builtin

* ``cifar10`` — ResNet-18 (CIFAR stem) on 8 px patches at stride 4 of the 32 px images: a 7x7 grid
  with CPC v2's 50 % overlap, scaled down from 64 px / 32 px; predictions 3 rows below (the paper's
  appendix pseudocode: steps_to_ignore=2, steps_to_predict=3), emb_scale 0.1, target_dim 64, a
  5-block context network of width 256, batch 256, Adam, 200 epochs::

      python -m ssl_jax.main --config=configs/cpc.py:cifar10 --workdir=gs://BUCKET/cpc_c10

* ``imagenet`` — the paper's grid: 64 px patches at stride 32 on 256 px crops (a 7x7 grid; a 240 px
  crop is not tiled by 64/32), predictions 3 rows below, emb_scale 0.1, target_dim 64, 5 context
  blocks of width 256, batch 512, Adam. Scaled: ResNet-50 with BatchNorm instead of the paper's
  ResNet-161 with layer normalisation (not in this library), 200 epochs::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/cpc.py:imagenet --workdir=gs://BUCKET/cpc_in1k

Measured, ``builtin`` (``python benchmarks/quality.py configs/cpc.py:builtin``, 2-core CPU shared
with another training run): 300 steps, loss 7.385 -> 3.221 (log of the 1,600 candidates = 7.38;
prediction accuracy 0.25 at the end), kNN top-1 0.732 trained vs 0.328 random init, error ratio
0.40 (bar: 0.667), 711 s wall (40 img/s). Eval features on the same checkpoint: mean-pooled patch
encodings ('patches', the default) 0.732 vs 0.328 random, ratio 0.40; the backbone on the whole
24 px image ('image') 0.727 vs 0.465 random, ratio 0.51 -- so ``eval_features='patches'``.
Predicting 2-3 rows below instead (no overlap between a patch and its targets; ``--set
method.min_step=2 --set method.max_step=3``): loss 7.355 -> 4.799, kNN 0.659 vs 0.328, ratio 0.51,
825 s -- so the builtin predicts 1-2 rows below.
"""
from configs import _common as common
from ssl_jax import config as config_lib


@common.takes_backbone
def get_config(arg: str = 'builtin'):
  c = config_lib.base_config()
  c.method.name = 'cpc'
  c.method.patch_size = 64
  c.method.patch_stride = 32
  c.method.min_step = 3              # predict rows i+min_step .. i+max_step from c_{i,j}
  c.method.max_step = 3
  c.method.context_blocks = 5
  c.method.context_dim = 256
  c.method.target_dim = 64
  c.method.emb_scale = 0.1           # scale of the predictions (an inverse temperature)
  c.method.patch_flip = 0.5          # per-patch augmentation (CPC v2)
  c.method.patch_color_drop = 0.5
  c.method.eval_features = 'patches'  # 'patches': mean-pooled grid of patch encodings | 'image'
  c.aug.recipe = 'mocov2'
  c.aug.overrides = dict(blur=None)
  c.data.crop_scale = (0.5, 1.0)
  c.optim.name = 'adamw'
  c.optim.lr = 4e-4                  # Adam as CPC v2; lr and warmup are this library's choice
  c.optim.lr_scaling = 'none'
  c.optim.weight_decay = 0.0
  c.optim.warmup_steps = 1000

  if arg == 'builtin':
    common.builtin_data(c, image_size=24, batch_size=64)
    # (builtin_data turns whole-crop flips off: digits are not mirror-symmetric; the per-patch
    # flips, method.patch_flip 0.5, stay on.)
    common.cifar_resnet18(c, width=16)
    c.method.patch_size = 8
    c.method.patch_stride = 4
    c.method.min_step = 1
    c.method.max_step = 2
    c.method.context_dim = 128
    c.method.patch_color_drop = 0.0  # grey digits: the three channels are equal
    c.optim.lr = 1e-3
    common.schedule(c, steps=300, warmup_steps=20, checkpoint_every=100)
    c.train.log_every = 10
  elif arg == 'cifar10':
    common.cifar10_data(c, batch_size=256)
    common.cifar_resnet18(c)
    c.method.patch_size = 8
    c.method.patch_stride = 4
    common.schedule(c, steps=200 * 195, checkpoint_every=5000, knn_every=10000)
  elif arg == 'imagenet':
    common.imagenet_data(c, batch_size=512, image_size=256, crop_scale=(0.3, 1.0))
    c.model.backbone = 'resnet50'
    common.schedule(c, steps=200 * 2502, checkpoint_every=2000, knn_every=10000)
  else:
    raise common.unknown_variant('cpc', arg)
  return c
