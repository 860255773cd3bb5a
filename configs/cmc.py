"""CMC (Tian, Krishnan & Isola 2020): contrastive multiview coding of the L and ab views.

Variants (``--config=configs/cmc.py:<variant>``):

* ``builtin`` — two width-16 CIFAR-stem ResNet-18s (one for L, one for ab) on the built-in
  ``mnist5k_color`` set (the MNIST-5k digits drawn in a class-dependent colour: grey digits have
  no ab to contrast with), 16x16 crops, batch 128, 4000-row banks, the paper's SGD lr 0.03, 800
  steps, temperature 0.2 (as InstDis's builtin: 0.07 over a few dozen epochs of near-identical
  digits learns slowly). kNN on the L encoder's features (``method.feature_views=('L',)``): the
  colour of this set gives the class away, so a random ab encoder is already at 0.955 and the
  concatenated features mostly measure the colour. Measured (``benchmarks/quality.py``, 2-core
  CPU, 695 s): loss 16.75 -> 14.64, L features kNN 0.796 vs 0.640 random, error ratio **0.57**
  (online kNN 0.767 / 0.759 / 0.804 / 0.796 at steps 200-800); on the same checkpoint the
  paper's L + ab concatenation 0.962 vs 0.892 (ratio 0.35) and ab alone 0.975 vs 0.955 (0.56).
  lr 0.15 (InstDis's builtin value) swung: 0.765 at step 250, 0.706 at 1000 (ratio 0.82)::

      python -m ssl_jax.main --config=configs/cmc.py:builtin --workdir=/tmp/cmc_builtin

* ``cifar10`` — ResNet-18 (CIFAR stem) per view, 128-d embeddings, temperature 0.07, bank momentum
  0.5, batch 128, SGD lr 0.03, momentum 0.9, weight decay 1e-4, 240 epochs (cosine)::

      python -m ssl_jax.main --config=configs/cmc.py:cifar10 --workdir=gs://BUCKET/cmc_c10

* ``imagenet`` — the paper's ImageNet setting: one ResNet-50 of half width (x0.5, width 32) per
  view, L and ab features concatenated for evaluation, 128-d, temperature 0.07, momentum 0.5,
  random resized crop (0.2, 1) and flip, batch 256, SGD lr 0.03, momentum 0.9, weight decay 1e-4,
  240 epochs (the official code's; cosine instead of its x0.1 steps at 120 / 160 / 200). The full
  softmax over two 1.28M-row banks costs two 256 x 1.28M logit matrices per step (the paper
  samples 16,384 negatives)::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \
          --config=configs/cmc.py:imagenet --workdir=gs://BUCKET/cmc_in1k
"""
from configs import _common as common
from ssl_jax import config as config_lib


@common.takes_backbone
def get_config(arg: str = 'builtin'):
  c = config_lib.base_config()
  c.method.name = 'cmc'
  c.method.views = ('L', 'ab')        # names in ssl_jax.methods.contrastive.cmc.VIEWS
  c.method.graph = 'full'             # 'full' | 'core' (matters with 3+ views)
  c.method.feature_views = ()         # () = all views, concatenated (the paper)
  c.method.temperature = 0.07
  c.method.feature_dim = 128
  c.method.bank_momentum = 0.5
  c.method.bank_size = 0              # 0: one row per image of data.train_split
  c.aug.recipe = 'none'               # crop and flip only: colour augmentation would mix the views
  c.data.crop_scale = (0.2, 1.0)
  c.optim.name = 'sgd'
  c.optim.lr = 0.03
  c.optim.lr_scaling = 'none'
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4

  if arg == 'builtin':
    common.builtin_data(c, image_size=16, batch_size=128, crop_scale=(0.3, 1.0))
    c.data.name = 'mnist5k_color'
    common.cifar_resnet18(c, width=16)
    c.method.feature_views = ('L',)
    c.method.temperature = 0.2
    common.schedule(c, steps=800, warmup_steps=20, checkpoint_every=100)
    c.train.log_every = 10
  elif arg == 'cifar10':
    common.cifar10_data(c, batch_size=128)
    common.cifar_resnet18(c)
    common.schedule(c, steps=240 * 390, warmup_steps=0, checkpoint_every=5000, knn_every=10000)
  elif arg == 'imagenet':
    common.imagenet_data(c, batch_size=256)
    c.model.backbone = 'resnet50'
    c.model.width = 32                # ResNet-50 x0.5 per view
    common.schedule(c, steps=240 * 5004, warmup_steps=0, checkpoint_every=2000, knn_every=10000)
  else:
    raise common.unknown_variant('cmc', arg)
  return c
