"""BEiT (Bao et al. 2022): masked prediction of a VQ tokenizer's visual tokens.

First train the tokenizer (configs/vqvae.py, same variant), then name its workdir here::

    python -m ssl_jax.main --config=configs/vqvae.py:builtin --workdir=/tmp/vqvae_builtin
    python -m ssl_jax.main --config=configs/beit.py:builtin --workdir=/tmp/beit_builtin \
        --config.method.tokenizer_workdir=/tmp/vqvae_builtin

(``benchmarks/quality.py configs/beit.py:builtin --set method.tokenizer_workdir=/tmp/vqvae_builtin``
for the benchmark row.) The tokenizer sizes come from ``vq_tokenizer.TOKENIZERS[variant]``, the same
table configs/vqvae.py uses, so the checkpoint always fits.

Variants (``<variant>[,<backbone>]``, backbone one of vit_tiny, vit_small, vit_base):

* ``builtin`` — the 96-d, depth-4 ViT (patch 4) of the other masked configs at 16 px (4x4 = 16
  patches), block-wise masking of 6 patches (40 %) with blocks of at least 4 patches, batch 256,
  2500 steps (~11 min on 2 CPU cores; the tokenizer run ~1 min).
* ``cifar10`` — ViT-T, 4 px patches at 32 px, 26 of 64 patches masked, 800 epochs::

      python -m ssl_jax.main --config=configs/beit.py:cifar10 --workdir=gs://BUCKET/beit_c10 \
          --config.method.tokenizer_workdir=gs://BUCKET/vqvae_c10

* ``imagenet`` — ViT-B/16 at 224 px, the paper's recipe: 75 of 196 patches masked block-wise with
  blocks of >= 16 patches, AdamW (0.9, 0.999), lr 1.5e-3 at batch 2048 (1.875e-4 per 256), weight
  decay 0.05, 10 warm-up epochs, 800 epochs, stochastic depth 0.1, crops of scale (0.08, 1) with
  flips and colour jitter 0.4; a vocabulary of 8192 codes::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main --config=configs/beit.py:imagenet \
          --workdir=gs://BUCKET/beit_in1k --config.method.tokenizer_workdir=gs://BUCKET/vqvae_in1k
"""
from configs import _common as common
from ssl_jax import config as config_lib
from ssl_jax.methods.masked import vq_tokenizer


def get_config(arg: str = 'builtin'):
  variant, _, backbone = arg.partition(',')
  if variant not in ('builtin', 'cifar10', 'imagenet'):
    raise common.unknown_variant('beit', variant, hint=common.VIT_BACKBONES)
  c = config_lib.base_config()
  c.method.name = 'beit'
  c.method.mask_ratio = 0.4
  c.method.min_mask_patches = 16
  c.method.mask_attempts = 50
  c.method.tokenizer = vq_tokenizer.tokenizer_config(variant)
  c.method.tokenizer_workdir = ''
  c.method.tokenizer_random_init = False   # True only in tests
  c.model.pool = 'mean'           # eval / export feature: mean of the patch tokens ('token': [CLS])
  c.aug.recipe = 'none'
  c.optim.name = 'adamw'
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.05
  c.optim.lr = 1.875e-4
  c.optim.lr_scaling = 'linear'
  c.optim.clip_grad_norm = 3.0

  if variant == 'builtin':
    # 16 px (4x4 patches) and 2500 steps: kNN error ratio 0.49 (kNN 0.820 vs 0.633 random);
    # 1500 steps gave 0.69, 24 px / 300 steps 0.95.
    common.builtin_data(c, image_size=16, crop_scale=(0.5, 1.0), batch_size=256)
    common.vit(c, backbone, default='vit_tiny', cpu_size=(96, 4, 3), patch_size=4)
    c.method.min_mask_patches = 4
    c.optim.lr = 1e-3
    common.schedule(c, steps=2500, warmup_steps=20, checkpoint_every=500)
  elif variant == 'cifar10':
    common.cifar10_data(c, crop_scale=(0.2, 1.0), batch_size=1024)
    common.vit(c, backbone, default='vit_tiny', patch_size=4)
    c.method.min_mask_patches = 4
    common.schedule(c, steps=800 * 48, warmup_steps=10 * 48, checkpoint_every=5000,
                    knn_every=10000)
  else:
    common.imagenet_data(c, crop_scale=(0.08, 1.0), batch_size=2048)
    common.vit(c, backbone, default='vit_base', patch_size=16)
    c.model.drop_path_rate = 0.1
    c.aug.overrides = dict(color_jitter=dict(p=1.0, brightness=0.4, contrast=0.4,
                                             saturation=0.4, hue=0.0))
    common.schedule(c, steps=800 * 625, warmup_steps=10 * 625, checkpoint_every=1000,
                    knn_every=10000)
  return c
