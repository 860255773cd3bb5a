"""DINO (Caron et al. 2021): self-distillation with no labels, multi-crop, centering, sharpening.

Variants (``--config=configs/dino.py:<variant>[,<backbone>]``, backbone one of vit_tiny,
vit_small, vit_base, resnet18, resnet50 to override the variant's default):

* ``builtin`` — a 64-d, depth-4 ViT (patch 4) on the built-in MNIST-5k set: 2 global crops of
  16 px and 2 local crops of 8 px (the ViT resamples its position embedding), BatchNorm in the
  head, batch 64, 1000 steps, teacher momentum 0.97 -> 1; ~10 min on a 2-core CPU::

      python -m ssl_jax.main --config=configs/dino.py:builtin --workdir=/tmp/dino_builtin
      python -m ssl_jax.viz.attention --config=configs/dino.py:builtin \
          --workdir=/tmp/dino_builtin --out=/tmp/dino_attn

* ``cifar10`` — ViT-S (default; or ``cifar10,vit_tiny``) with 4 px patches: 32 px global and
  16 px local crops, batch 512, 300 epochs, out_dim 8192::

      python -m ssl_jax.main --config=configs/dino.py:cifar10 --workdir=gs://BUCKET/dino_c10

* ``imagenet`` — ViT-S/16 (default; ``imagenet,vit_base`` / ``imagenet,vit_tiny``) with the
  official main_dino.py recipe: out_dim 65536, norm_last_layer, student temperature 0.1, teacher
  0.04 -> 0.07 warmed up over 30 epochs, center momentum 0.9, teacher momentum 0.996 -> 1 (cosine),
  AdamW lr 5e-4 x B/256 (B = 1024) with 10 warm-up epochs and cosine to 1e-6, weight decay
  0.04 -> 0.4 (cosine), gradient clipping 3.0 per tensor, last layer frozen for the first epoch,
  drop path 0.1, 2 global crops of 224 px (scale 0.25..1) and 10 local crops of 96 px
  (scale 0.05..0.25), 300 epochs::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/dino.py:imagenet --workdir=gs://BUCKET/dino_in1k
"""
import ml_collections

from configs import _common as common
from configs import _folder as folder
from ssl_jax import config as config_lib


def dino_base(c, out_dim=65536):
  """Method fields shared by DINO and iBOT (main_dino.py defaults)."""
  m = c.method
  m.out_dim = out_dim
  m.hidden_dim = 2048
  m.bottleneck_dim = 256
  m.num_layers = 3
  m.norm_last_layer = True
  m.use_bn_in_head = False
  m.student_temp = 0.1
  m.teacher_temp = 0.07
  m.warmup_teacher_temp = 0.04
  m.warmup_teacher_temp_steps = 0
  m.center_momentum = 0.9
  m.momentum = 0.996
  m.momentum_final = 1.0
  m.num_local_crops = 8
  m.local_crop_size = 96
  m.global_crop_scale = (0.4, 1.0)
  m.local_crop_scale = (0.05, 0.4)
  m.weight_decay_end = 0.4
  m.freeze_last_layer_steps = 0
  # One recipe per crop kind: global crop 1, global crop 2, local crops (DataAugmentationDINO).
  c.aug = ml_collections.ConfigDict({'recipe': ('dino_global1', 'dino_global2', 'dino_local')})
  c.optim.name = 'adamw'
  c.optim.lr = 5e-4
  c.optim.lr_scaling = 'linear'
  c.optim.weight_decay = 0.04
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.clip_grad_norm = 3.0
  c.optim.min_lr_ratio = 1e-6 / 5e-4
  return c


def apply_scale(c, variant, backbone, name):
  """Backbone, data and schedule of the builtin / cifar10 / imagenet variants."""
  m = c.method
  if variant == 'builtin':
    # 16 px global / 8 px local crops (4x4 and 2x2 patches): MNIST digits survive 16 px, and
    # the small grids let 1000 steps run in ~10 min on two CPU cores.
    common.builtin_data(c, image_size=16, batch_size=64)
    common.vit(c, backbone, default='vit_tiny', cpu_size=(64, 4, 4), patch_size=4)
    c.model.width = 16
    c.model.cifar_stem = True
    m.out_dim = 1024
    m.hidden_dim = 512
    m.bottleneck_dim = 128
    m.num_local_crops = 2
    m.local_crop_size = 8
    # BatchNorm in the head (the official use_bn_in_head option). Without it the builtin run
    # ends in the uniform collapse (teacher entropy ~ log K, kNN error ratio ~1.0): a random
    # ViT's pooled output barely varies between images, so the centred teacher targets are
    # near uniform and the student has nothing to fit. Measured without BN and not enough
    # (300-500 steps, kNN error ratio 0.96-1.06 each): norm_last_layer False; out_dim 256 +
    # teacher temp 0.02; lr / 4; teacher momentum 0.99 / 0.996; no local crops; a ResNet-18;
    # crops-only augmentation. With BN: ratio 0.86 (24 px, 300 steps), 0.80 (24 px, 600),
    # 0.67 (16 px, 600), 0.60 (16 px, 1000 steps: kNN 0.779 vs 0.631 random; teacher entropy
    # 4.6 of log 1024 = 6.93, no collapse).
    m.use_bn_in_head = True
    # MNIST digits fill only the centre of a black image: local crops of 10-40 % are often
    # background only, so larger crops and fewer locals here.
    m.global_crop_scale = (0.5, 1.0)
    m.local_crop_scale = (0.25, 0.5)
    # A short run needs a fast teacher: with 0.996 -> 1 the evaluated teacher would still be
    # largely its random init at the end.
    m.momentum = 0.97
    m.teacher_temp = 0.04
    m.warmup_teacher_temp = 0.04
    m.warmup_teacher_temp_steps = 0
    m.freeze_last_layer_steps = 20
    c.optim.lr = 2e-3              # x 64 / 256
    c.optim.min_lr_ratio = 0.01
    common.schedule(c, steps=1000, warmup_steps=20, checkpoint_every=250)
  elif variant == 'cifar10':
    common.cifar10_data(c, batch_size=512)
    common.vit(c, backbone, default='vit_small', patch_size=4)
    c.model.drop_path_rate = 0.1
    c.model.cifar_stem = True
    m.out_dim = 8192
    m.local_crop_size = 16
    m.global_crop_scale = (0.25, 1.0)
    m.local_crop_scale = (0.05, 0.25)
    m.warmup_teacher_temp_steps = 30 * 97
    m.freeze_last_layer_steps = 97
    common.schedule(c, steps=300 * 97, warmup_steps=10 * 97, checkpoint_every=5000,
                    knn_every=10000)
  elif variant == 'imagenet':
    common.imagenet_data(c, batch_size=1024)
    common.vit(c, backbone, default='vit_small', patch_size=16)
    c.model.drop_path_rate = 0.1
    m.num_local_crops = 10
    m.global_crop_scale = (0.25, 1.0)
    m.local_crop_scale = (0.05, 0.25)
    m.warmup_teacher_temp_steps = 30 * 1251
    m.freeze_last_layer_steps = 1251
    common.schedule(c, steps=300 * 1251, warmup_steps=10 * 1251, checkpoint_every=2000,
                    knn_every=25000)
  else:
    raise common.unknown_variant(name, variant, hint="optionally ',<backbone>'")
  return c


def folder_config(arg: str):
  """``folder,PATH[,MINUTES]``: the recipe chosen from the user's images (configs/_folder.py) on
  top of the builtin (short budgets) or cifar10 DINO settings. Short budgets train a ResNet-18
  (DINO works with ResNets, Caron et al. 2021 Table 2): a CPU-sized ViT learns too slowly here.
  Local crops are half the global side."""
  base = folder.base_variant(arg)
  c = get_config(base)
  r = folder.configure(c, arg, vit=base != 'builtin')
  c.method.local_crop_size = r.image_size // 2
  c.method.global_crop_scale = (max(0.3, r.crop_scale[0]), 1.0)
  c.method.local_crop_scale = (0.1, 0.3)
  return c


def get_config(arg: str = 'builtin'):
  if arg.startswith('folder'):
    return folder_config(arg)
  variant, _, backbone = arg.partition(',')
  c = config_lib.base_config()
  c.method.name = 'dino'
  dino_base(c)
  return apply_scale(c, variant, backbone, 'dino')
