"""InfoMin Aug (Tian et al., "What Makes for Good Views for Contrastive Learning?", NeurIPS 2020,
Sec. 4.2 / App.): MoCo v2 (``configs/moco.py``) with the InfoMin augmentation recipe, which lowers
the mutual information shared by the two views while keeping the task-relevant information:
RandomResizedCrop with scale (0.08, 1), colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale
p 0.2, Gaussian blur p 0.5 (as MoCo v2) plus stronger photometric draws (solarize p 0.2 here) and
temperature 0.15, 800 epochs, as the paper's InfoMin Aug row of Table 4.

Departures: RandAugment and the Lab / YDbDr colour-space view split of the paper are not among the
on-device operations, and the paper's extra jigsaw branch (InfoMin + JigSaw) is not included; the
solarization (p 0.2) stands in for RandAugment's photometric ops. Variants follow
``configs/moco.py`` ('builtin', 'cifar10', 'imagenet')::

    python -m ssl_jax.main --config=configs/infomin.py:imagenet --workdir=gs://BUCKET/infomin_in1k

The view-selection tooling (InfoNCE estimate and the patch-distance sweep) is
``ssl_jax/infomin.py`` and ``benchmarks/infomin_sweep.py``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import moco  # pylint: disable=wrong-import-position

# InfoMin Aug = MoCo v2's recipe ('mocov2' in augment.RECIPES) plus these overrides.
INFOMIN_OVERRIDES = {'solarize': {'p': 0.2, 'threshold': 0.5}}


def get_config(arg: str = 'builtin'):
  c = moco.get_config(arg)
  c.aug.recipe = 'mocov2'
  overrides = dict(INFOMIN_OVERRIDES)
  if arg in ('builtin', 'cifar10'):            # grey digits / 32 px: no blur, as configs/moco.py
    overrides['blur'] = None
  c.aug.overrides = overrides
  if arg == 'imagenet':
    c.data.crop_scale = (0.08, 1.0)
    c.method.temperature = 0.15
    c.train.steps = 4 * c.train.steps          # 800 epochs instead of MoCo v2's 200
  return c
