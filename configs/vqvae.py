"""VQ-VAE visual tokenizer (van den Oord et al. 2017) for BEiT, trained as a method of its own.

Its checkpoint is what configs/beit.py loads (``config.method.tokenizer_workdir``); the codebook and
network sizes of each variant come from ``ssl_jax.methods.masked.vq_tokenizer.TOKENIZERS`` so the
two configs always agree. Variants: ``builtin`` (MNIST-5k at 16 px, one code per 4 px patch, 128
codes), ``cifar10`` (32 px, 4 px patches, 1024 codes), ``imagenet`` (224 px, one code per 16 px
patch, 8192 codes as BEiT's vocabulary)::

    python -m ssl_jax.main --config=configs/vqvae.py:builtin --workdir=/tmp/vqvae_builtin
    python -m ssl_jax.main --config=configs/vqvae.py:cifar10 --workdir=gs://BUCKET/vqvae_c10
    launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
        --config=configs/vqvae.py:imagenet --workdir=gs://BUCKET/vqvae_in1k
"""
from configs import _common as common
from ssl_jax import config as config_lib
from ssl_jax.methods.masked import vq_tokenizer


@common.takes_backbone
def get_config(arg: str = 'builtin'):
  if arg not in ('builtin', 'cifar10', 'imagenet'):
    raise common.unknown_variant('vqvae', arg)
  c = config_lib.base_config()
  c.method = vq_tokenizer.tokenizer_config(arg)
  c.method.name = 'vqvae'
  c.method.beta = 0.25             # commitment weight (paper)
  c.model.backbone = 'vit_tiny'    # unused by the tokenizer; recorded in checkpoint metadata
  c.model.patch_size = c.method.downsample   # the BEiT patch size these codes are for
  c.aug.recipe = 'none'
  c.optim.name = 'adamw'
  c.optim.lr = 2e-4                # the paper's Adam lr
  c.optim.lr_scaling = 'none'
  c.optim.weight_decay = 0.0
  c.data.crop_scale = (0.5, 1.0)
  if arg == 'builtin':
    common.builtin_data(c, image_size=16, batch_size=128)   # the size configs/beit.py:builtin uses
    c.optim.lr = 2e-3
    common.schedule(c, steps=200, warmup_steps=20, checkpoint_every=100)
  elif arg == 'cifar10':
    common.cifar10_data(c, batch_size=256)
    common.schedule(c, steps=100_000, warmup_steps=500, checkpoint_every=5000)
  else:
    common.imagenet_data(c, crop_scale=(0.08, 1.0), batch_size=1024)
    c.optim.lr = 1e-3
    common.schedule(c, steps=200_000, warmup_steps=5000, checkpoint_every=5000)
  return c
