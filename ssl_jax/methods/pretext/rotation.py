"""RotNet (Gidaris, Singh & Komodakis, "Unsupervised Representation Learning by Predicting Image
Rotations", ICLR 2018).

Every image is shown to the network in all four rotations {0, 90, 180, 270} degrees and a head on
the pooled backbone feature classifies which one was applied (4-way cross-entropy,
``losses.pretext_cross_entropy``). The paper feeds the four rotated copies of each image in the
same batch (its Sec. 3 / Table 2 finding); so do we: the batch holds 4N images, and BatchNorm
statistics span all of them.

The rotations run on device in ``views()``; ``rotate90_per_example`` (random rotation per image)
is shared with SiT.

Config (``config.method``): head_hidden_dim, head_layers (1 = a linear classifier).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.data.image_ops import NUM_ROTATIONS, all_rotations, rotate90, rotate90_per_example
from ssl_jax.methods.base import Method, apply_module, init_module
from ssl_jax.models.heads import MLP

def classifier_head(method_cfg, num_classes: int) -> MLP:
  """The pretext classifier on the pooled feature: ``head_layers - 1`` hidden Linear-BN-ReLU
  layers of ``head_hidden_dim``, then a linear layer to ``num_classes`` logits (``method_cfg``:
  ``PretextClassifier.Hparams``)."""
  layers = method_cfg.head_layers
  hidden = method_cfg.head_hidden_dim
  return MLP(hidden_dims=(hidden,) * (layers - 1), out_dim=num_classes, use_bn=True)


class PretextClassifier(Method):
  """Backbone + :func:`classifier_head` trained with cross-entropy on pretext labels.

  Subclasses set ``num_classes`` and ``acc_metric`` and give ``views`` that return
  ``{'images': (N, H, W, C), 'labels': (N,)}`` (RotNet, CutPaste).
  """

  num_views = 1
  num_classes: int = 0
  acc_metric: str = 'pretext_acc'

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams):
    head_layers: int = 2   # 1 = a linear classifier
    head_hidden_dim: int = 256

  def __init__(self, config):
    super().__init__(config)
    self.head = classifier_head(self.hp, self.num_classes)

  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    bb_params, bb_stats = init_module(self.backbone, k1, x)
    hd_params, hd_stats = init_module(self.head, k2, jnp.zeros((2, self.feature_dim)))
    return ({'backbone': bb_params, 'head': hd_params},
            {'batch_stats': {'backbone': bb_stats, 'head': hd_stats}})

  def loss(self, params, state, views, rng):
    stats = state.buffers['batch_stats']
    h, bb_stats = apply_module(self.backbone, params['backbone'], stats['backbone'],
                               views['images'], train=True, rngs={'dropout': rng})
    logits, hd_stats = apply_module(self.head, params['head'], stats['head'], h, train=True)
    loss, acc = losses.pretext_cross_entropy(logits, views['labels'])
    buffers = dict(state.buffers, batch_stats={'backbone': bb_stats, 'head': hd_stats})
    return loss, ({self.acc_metric: acc}, buffers)


class RotNet(PretextClassifier):
  """Rotation prediction on the four rotated copies of every image."""

  num_classes = NUM_ROTATIONS
  acc_metric = 'rotation_acc'

  def views(self, batch, rng):
    x = super().views(batch, rng)['view0']
    images, labels = all_rotations(x)
    return {'images': images, 'labels': labels}
