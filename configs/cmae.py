"""CMAE (Huang et al. 2023): MAE + a momentum-contrastive branch on a pixel-shifted view.

Variants (``--config=configs/cmae.py:<variant>[,<backbone>]``, backbone one of vit_tiny, vit_small,
vit_base to override the variant's default):

Every variant is configs/mae.py's of the same name plus CMAE's fields below (and, for
``imagenet``, the official 1600-epoch schedule).

* ``builtin`` — configs/mae.py's builtin run (96-d, depth-4 ViT with 4 px patches on the built-in
  MNIST-5k set at 16 px, per-patch masking 75 %, raw-pixel targets, batch 256, 1500 steps) plus
  CMAE's branch: 2-block feature decoder, pixel shift up to 3 px, momentum 0.99 -> 1 (the official
  constant 0.996 barely moves the target in a short run). kNN error ratio 0.48 (kNN 0.830 vs
  0.646 random; MAE alone 0.54), ~13 min on a 2-core CPU::

      python -m ssl_jax.main --config=configs/cmae.py:builtin --workdir=/tmp/cmae_builtin

* ``cifar10`` — ViT-T (default; or ``cifar10,vit_small``) with 4 px patches on 32 px CIFAR-10,
  shift up to 4 px, decoders 256-d (pixel: 4 blocks, feature: 2), 1600 epochs, batch 1024::

      python -m ssl_jax.main --config=configs/cmae.py:cifar10 --workdir=gs://BUCKET/cmae_c10

* ``imagenet`` — ViT-B/16 (default) at 224 px, the official recipe
  (``cmae_vit-base-p16_32xb128-coslr-1600e_in1k.py``): 256-px random-resized crops of scale
  (0.2, 1) with flips, source = top-left 224 window, target = the window shifted by up to 31 px
  with MoCo v2 colour augmentation; 65 % of the 2x2 patch groups masked; norm_pix_loss; pixel
  decoder 512-d x 8 blocks x 16 heads, feature decoder 512-d x 2 blocks; projector 768-1536-256
  and predictor 256-1536-256 (BN, no last BN); tau 0.07, lambda_c 1 (with the code's 2 tau
  scale); momentum 0.996 (constant, as the official hook's ``end_momentum=0.996``); sin-cos
  position embeddings; AdamW betas (0.9, 0.95), weight decay 0.05, lr 1.5e-4 x B/256 with
  B = 4096, 40 warm-up epochs, 1600 epochs::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/cmae.py:imagenet --workdir=gs://BUCKET/cmae_in1k
"""
import ml_collections

from configs import _common as common
from configs import mae as mae_config

VARIANTS = ('builtin', 'cifar10', 'imagenet')


def get_config(arg: str = 'builtin'):
  variant, _, _ = arg.partition(',')
  if variant not in VARIANTS:
    raise common.unknown_variant('cmae', variant, hint=common.VIT_BACKBONES)
  c = mae_config.get_config(arg)  # MAE's encoder, pixel decoder, optimiser, data and schedule
  c.method.name = 'cmae'
  m = c.method
  m.mask_ratio = 0.65
  m.mask_unit = 2                  # mask whole 2x2 groups of patches (official code)
  m.feature_decoder_dim = 512
  m.feature_decoder_depth = 2
  m.feature_decoder_heads = 16
  m.proj_layers = 2
  m.proj_hidden_dim = 1536
  m.proj_dim = 256
  m.pred_layers = 2
  m.pred_hidden_dim = 1536
  m.pred_dim = 256
  m.temperature = 0.07
  m.contrastive_weight = 1.0
  m.momentum = 0.996
  m.momentum_final = 0.996
  m.max_shift = 31                 # pixels, at 224 px
  # (source, target) recipes: colour augmentation on the target view only (official CMAEDataset).
  c.aug = ml_collections.ConfigDict({'recipe': ('none', 'mocov2')})

  if variant == 'builtin':
    m.mask_ratio = 0.75            # as configs/mae.py:builtin, so the two compare directly
    m.mask_unit = 1
    m.feature_decoder_dim = 64
    m.feature_decoder_heads = 4
    m.proj_hidden_dim = 256
    m.proj_dim = 64
    m.pred_hidden_dim = 256
    m.pred_dim = 64
    m.max_shift = 3
    m.momentum = 0.99
    m.momentum_final = 1.0
  elif variant == 'cifar10':
    m.feature_decoder_dim = 256
    m.feature_decoder_heads = 8
    m.max_shift = 4
  else:  # imagenet: 1600 epochs (MAE's config has 800)
    common.schedule(c, steps=1600 * 312, warmup_steps=40 * 312, checkpoint_every=1000,
                    knn_every=10000)
  return c
