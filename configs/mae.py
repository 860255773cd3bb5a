"""MAE (He et al. 2022): masked autoencoder pretraining of a ViT.

Variants (``--config=configs/mae.py:<variant>[,<backbone>]``, backbone one of vit_tiny, vit_small,
vit_base to override the variant's default):

* ``builtin`` — a 96-d, depth-4 ViT (patch 4) on the built-in MNIST-5k set at 16 px, batch 256,
  1500 steps; ~7 minutes on a 2-core CPU::

      python -m ssl_jax.main --config=configs/mae.py:builtin --workdir=/tmp/mae_builtin
      python -m ssl_jax.viz.reconstruction --config=configs/mae.py:builtin \
          --workdir=/tmp/mae_builtin --out=mae_grid.png

* ``cifar10`` — ViT-T (default; or ``cifar10,vit_small``) with 4 px patches on 32 px CIFAR-10,
  1600 epochs, batch 1024, decoder 256-d x 4::

      python -m ssl_jax.main --config=configs/mae.py:cifar10 --workdir=gs://BUCKET/mae_c10

* ``imagenet`` — ViT-B/16 (default; ``imagenet,vit_small`` / ``imagenet,vit_tiny``) at 224 px, the
  paper's recipe: mask 75 %, norm_pix_loss, decoder 512-d x 8 blocks x 16 heads, AdamW
  betas (0.9, 0.95), weight decay 0.05, base lr 1.5e-4 x B/256 with B = 4096, 40 warm-up epochs,
  800 epochs, crops of scale (0.2, 1) with flips and no colour augmentation::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/mae.py:imagenet --workdir=gs://BUCKET/mae_in1k
"""
from configs import _common as common
from configs import _folder as folder
from ssl_jax import config as config_lib


def folder_config(arg: str):
  """``folder,PATH[,MINUTES]``: the recipe chosen from the user's images (configs/_folder.py) on
  top of the builtin (short budgets) or cifar10 MAE settings, on a ViT with an 8x8 patch grid."""
  c = get_config(folder.base_variant(arg))
  folder.configure(c, arg, vit=True)
  return c


def get_config(arg: str = 'builtin'):
  if arg.startswith('folder'):
    return folder_config(arg)
  variant, _, backbone = arg.partition(',')
  c = config_lib.base_config()
  c.method.name = 'mae'
  c.method.mask_ratio = 0.75
  c.method.norm_pix_loss = True
  c.method.decoder_dim = 512
  c.method.decoder_depth = 8
  c.method.decoder_heads = 16
  c.model.pool = 'mean'           # eval / export feature: mean of the patch tokens ('token': [CLS])
  c.model.pos_embed = 'sincos'
  c.aug.recipe = 'none'           # MAE: crops and flips only
  c.optim.name = 'adamw'
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.weight_decay = 0.05
  c.optim.lr = 1.5e-4
  c.optim.lr_scaling = 'linear'
  c.data.crop_scale = (0.2, 1.0)

  if variant == 'builtin':
    # 16 px (4x4 patches, 4 visible): at 24 px / 300 steps the kNN error ratio was 0.87; at
    # 16 px / 1500 steps it is 0.54 (kNN 0.806 vs 0.639 random), ~7 min on 2 CPU cores.
    common.builtin_data(c, image_size=16, crop_scale=(0.5, 1.0), batch_size=256)
    common.vit(c, backbone, default='vit_tiny', cpu_size=(96, 4, 3), patch_size=4)
    c.method.decoder_dim = 64
    c.method.decoder_depth = 2
    c.method.decoder_heads = 4
    c.method.norm_pix_loss = False  # MNIST has many constant (black) patches
    c.optim.lr = 2e-3
    common.schedule(c, steps=1500, warmup_steps=20, checkpoint_every=250)
  elif variant == 'cifar10':
    common.cifar10_data(c, batch_size=1024)
    common.vit(c, backbone, default='vit_tiny', patch_size=4)
    c.method.decoder_dim = 256
    c.method.decoder_depth = 4
    c.method.decoder_heads = 8
    common.schedule(c, steps=1600 * 48, warmup_steps=40 * 48, checkpoint_every=5000,
                    knn_every=10000)
  elif variant == 'imagenet':
    common.imagenet_data(c, batch_size=4096)
    common.vit(c, backbone, default='vit_base', patch_size=16)
    common.schedule(c, steps=800 * 312, warmup_steps=40 * 312, checkpoint_every=1000,
                    knn_every=10000)
  else:
    raise common.unknown_variant('mae', variant, hint=common.VIT_BACKBONES)
  return c
