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
from ssl_jax.methods.base import Method, apply_module, init_module
from ssl_jax.models.heads import MLP

NUM_ROTATIONS = 4


def rotate90(images, k: int):
  """Rotates NHWC ``images`` by ``k`` x 90 degrees counter-clockwise (np.rot90 on the H, W axes)."""
  return jnp.rot90(images, k, axes=(1, 2))


def rotate90_per_example(images, ks):
  """Rotates image i of NHWC square ``images`` by ``ks[i]`` x 90 degrees counter-clockwise.

  ``ks`` may be traced (B,) ints: the four rotations are computed and one is selected per
  example, so shapes stay static.
  """
  if images.shape[1] != images.shape[2]:
    raise ValueError(f'rotations need square images, got {images.shape[1:3]}')
  rots = jnp.stack([rotate90(images, k) for k in range(NUM_ROTATIONS)])  # (4, B, H, W, C)
  onehot = jax.nn.one_hot(ks, NUM_ROTATIONS, dtype=images.dtype)        # (B, 4)
  return jnp.einsum('rbhwc,br->bhwc', rots, onehot)


def all_rotations(images):
  """(4B, H, W, C) images [rot0 batch; rot90 batch; rot180 batch; rot270 batch] and labels (4B,)."""
  b = images.shape[0]
  x = jnp.concatenate([rotate90(images, k) for k in range(NUM_ROTATIONS)], axis=0)
  y = jnp.repeat(jnp.arange(NUM_ROTATIONS, dtype=jnp.int32), b)
  return x, y


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
