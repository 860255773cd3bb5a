"""MSN (Assran et al. 2022): masked anchors vs an EMA target's sharpened prototype assignment;
PMSN (Mo et al. 2023): the same with a power-law prior instead of mean-entropy maximisation.

Variants (``--config=configs/msn.py:<variant>[,<backbone>]``):

* ``builtin`` — a 64-d, depth-4 ViT (patch 4) on the built-in MNIST-5k set: target and anchor
  crops of 16 px, 2 focal crops of 8 px, 15 % of every anchor's patches dropped, 256 prototypes,
  batch 64, 3000 steps, target momentum 0.97 -> 1; ~3 min on a 2-core CPU (Intel Xeon,
  AVX-512): kNN 0.775 against 0.631 for the random encoder, error ratio 0.61 (600 steps: 0.83)::

      python -m ssl_jax.main --config=configs/msn.py:builtin --workdir=/tmp/msn_builtin
      python benchmarks/quality.py configs/msn.py:builtin

* ``pmsn_builtin`` — ``builtin`` with PMSN's power-law prior (exponent 0.25): kNN 0.768, ratio 0.63.
* ``cifar10`` — ViT-S with 4 px patches, 32 px target / anchor and 10 focal crops of 16 px,
  batch 512, 300 epochs, otherwise the ImageNet ViT-S/16 recipe.
* ``imagenet`` — the official ViT-S/16 recipe (configs/pretrain/msn_vits16.yaml): patch drop
  0.15, 1 anchor + 10 focal crops (224 px at scale 0.3..1, 96 px at 0.05..0.3) against 1 target
  crop, 1024 prototypes, projector 2048-2048-256 with BatchNorm, temperature 0.1, target
  sharpening 0.25 (0.025 in all), ME-MAX weight 1, Sinkhorn on the targets, AdamW lr 1e-3 at
  batch 1024 with 15 warm-up epochs and cosine to 1e-6, weight decay 0.04 -> 0.4, clipping 3.0,
  target momentum 0.996 -> 1, 800 epochs. ``imagenet,vit_base`` is ViT-B/16 with patch drop 0.3
  (600 epochs); ``imagenet,vit_large`` is ViT-L/7 with patch drop 0.7 (300 epochs)::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/msn.py:imagenet --workdir=gs://BUCKET/msn_in1k

* ``pmsn`` — PMSN on ImageNet: the ViT-S/16 recipe with ``prior='power_law'``, exponent 0.25
  (``pmsn,vit_base`` for ViT-B/16)::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/msn.py:pmsn --workdir=gs://BUCKET/pmsn_in1k
"""
import ml_collections

from configs import _common as common
from ssl_jax import config as config_lib

# ImageNet: 1,281,167 images at batch 1024.
IN1K_STEPS_PER_EPOCH = 1251
# (patch size, patch drop, epochs) of the official per-backbone recipes.
IMAGENET_RECIPES = {'vit_small': (16, 0.15, 800), 'vit_base': (16, 0.3, 600),
                    'vit_large': (7, 0.7, 300)}


def msn_base(c):
  """The official ViT-S/16 method fields (msn_vits16.yaml)."""
  m = c.method
  m.num_prototypes = 1024
  m.temperature = 0.1
  m.sharpen_temperature = 0.25
  m.reg_weight = 1.0
  m.prior = 'uniform'
  m.power_law_exponent = 0.25
  m.entropy_weight = 0.0
  m.sinkhorn_iterations = 3
  m.mask_ratio = 0.15
  m.num_focal_crops = 10
  m.focal_crop_size = 96
  m.rand_crop_scale = (0.3, 1.0)
  m.focal_crop_scale = (0.05, 0.3)
  m.proj_layers = 3
  m.proj_hidden_dim = 2048
  m.proj_dim = 256
  m.proj_bn = True
  m.momentum = 0.996
  m.momentum_final = 1.0
  m.weight_decay_end = 0.4
  # Colour distortion of strength 0.5 (jitter 0.4 / 0.4 / 0.4 / 0.1 at p 0.8), grayscale 0.2,
  # blur p 0.5: MoCo v2's recipe.
  c.aug = ml_collections.ConfigDict({'recipe': 'mocov2'})
  c.optim.name = 'adamw'
  c.optim.lr = 1e-3
  c.optim.lr_scaling = 'none'
  c.optim.weight_decay = 0.04
  c.optim.clip_grad_norm = 3.0
  c.optim.min_lr_ratio = 1e-3
  return c


def get_config(arg: str = 'builtin'):
  variant, _, backbone = arg.partition(',')
  c = config_lib.base_config()
  c.method.name = 'msn'
  msn_base(c)
  m = c.method
  if variant in ('builtin', 'pmsn_builtin'):
    common.builtin_data(c, image_size=16, batch_size=64)
    common.vit(c, backbone, default='vit_tiny', cpu_size=(64, 4, 4), patch_size=4)
    c.model.width = 16
    c.model.cifar_stem = True
    m.num_prototypes = 256
    m.proj_hidden_dim, m.proj_dim = 256, 64
    m.num_focal_crops, m.focal_crop_size = 2, 8
    # MNIST digits fill the centre only: larger crops than ImageNet's.
    m.rand_crop_scale = (0.5, 1.0)
    m.focal_crop_scale = (0.25, 0.5)
    m.momentum = 0.97     # a short run needs a fast target (it is what is evaluated)
    c.optim.lr = 5e-4
    c.optim.min_lr_ratio = 0.01
    if variant == 'pmsn_builtin':
      m.prior = 'power_law'
    common.schedule(c, steps=3000, warmup_steps=20, checkpoint_every=1000)
  elif variant == 'cifar10':
    common.cifar10_data(c, batch_size=512)
    common.vit(c, backbone, default='vit_small', patch_size=4)
    c.model.cifar_stem = True
    m.focal_crop_size = 16
    common.schedule(c, steps=300 * 97, warmup_steps=15 * 97, checkpoint_every=5000,
                    knn_every=10000)
  elif variant in ('imagenet', 'pmsn'):
    common.imagenet_data(c, batch_size=1024)
    name = backbone or 'vit_small'
    if name not in IMAGENET_RECIPES:
      raise ValueError(f'configs/msn.py:{arg}: no official MSN recipe for {name!r}; use one of '
                       f'{sorted(IMAGENET_RECIPES)}')
    patch, m.mask_ratio, epochs = IMAGENET_RECIPES[name]
    common.vit(c, name, patch_size=patch)
    if variant == 'pmsn':
      m.prior = 'power_law'
    common.schedule(c, steps=epochs * IN1K_STEPS_PER_EPOCH, warmup_steps=15 * IN1K_STEPS_PER_EPOCH,
                    checkpoint_every=2000, knn_every=25000)
  else:
    raise common.unknown_variant('msn', variant, "'builtin', 'pmsn_builtin', 'cifar10', "
                                 "'imagenet' or 'pmsn'", hint="optionally ',<backbone>'")
  return c
