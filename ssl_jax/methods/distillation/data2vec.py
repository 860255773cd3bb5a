"""data2vec for vision (Baevski et al., "data2vec: A General Framework for Self-supervised
Learning in Speech, Vision and Language", ICML 2022).

One crop per image. The EMA teacher encodes the *unmasked* image; the student encodes the same
crop with BEiT block-wise masked patches replaced by a learned mask token
(``params['mask_token']``) and, through a linear regression head, predicts at every masked patch
the average of the teacher's top-K block outputs, each instance-normalised over the patch tokens
(``losses.data2vec_targets``), with the (smooth-)L2 loss of ``losses.data2vec_loss``.

Choices, stated:

* targets are the ViT's block outputs, each normalised by ``target_layer_norm`` ('instance',
  the default, as the paper; or 'layer' / 'none'), averaged, then optionally normalised again by
  ``target_final_norm`` ('layer' as the official fairseq vision config, or 'none');
* the block outputs used (``ViT.encode(return_layers=True)``, i.e. after the second
  residual; the paper's fairseq option ``end_of_block_targets=True``), patch tokens only (the
  [CLS] token is neither a target nor normalised with the patches);
* the teacher is an EMA of the whole student backbone (the paper shares the patch embedding and
  position embedding between student and teacher; an EMA copy of them is the common
  re-implementation); the EMA momentum anneals *linearly* from ``momentum`` to
  ``momentum_final`` over ``momentum_anneal_steps`` and then stays (fairseq
  ``get_annealed_rate``);
* masks: BEiT block-wise masks with ratio ``mask_ratio`` from a host-precomputed bank drawn on
  device (``distillation.masks.BlockMaskBank``, see there);
* evaluation/export use the *student* backbone (data2vec fine-tunes the student); ``features``
  mean-pools the patch tokens (``feature_pool='mean'``) since only patches are trained.

ViT backbones only. Metrics: ``target_std`` and ``pred_std`` (per-channel std over masked tokens;
a collapse monitor), ``mask_ratio``, ``ema_momentum``.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods import common
from ssl_jax.methods.base import Method, init_module
from ssl_jax.methods.distillation.masks import BlockMaskBank
from ssl_jax.models.vit import ViT


def linear_anneal(start: float, end: float, anneal_steps: int):
  """fairseq's ``get_annealed_rate``: linear from ``start`` to ``end`` over ``anneal_steps``."""
  def fn(step):
    frac = jnp.clip(step / max(anneal_steps, 1), 0.0, 1.0)
    return start + (end - start) * frac
  return fn


class Data2Vec(Method):
  """data2vec (vision): masked prediction of the EMA teacher's averaged top-K layers."""

  num_views = 1

  def __init__(self, config):
    super().__init__(config)
    if not isinstance(self.backbone, ViT):
      raise ValueError(f'config.model.backbone={config.model.backbone!r}: data2vec needs a ViT')
    m = config.method
    if not 0 < m.top_k <= self.backbone.depth:
      raise ValueError(f'config.method.top_k={m.top_k} must be in [1, depth={self.backbone.depth}]')
    self.grid = config.data.image_size // config.model.patch_size
    self.mask_bank = BlockMaskBank(self.grid, (m.mask_ratio, m.mask_ratio),
                                   size=m.mask_bank_size, seed=config.seed,
                                   min_num_patches=m.get('mask_min_patches', None) or None)
    self.regression_head = nn.Dense(self.feature_dim, name='regression_head')
    self.momentum_fn = linear_anneal(m.momentum, m.momentum_final,
                                     m.momentum_anneal_steps or config.train.steps)

  def views(self, batch, rng):
    k_aug, k_mask = jax.random.split(rng)
    out = super().views(batch, k_aug)
    out['mask'] = self.mask_bank.sample(k_mask, batch['view0'].shape[0])
    return out

  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    bb_params, _ = init_module(self.backbone, k1, x)
    head = self.regression_head.init(k2, jnp.zeros((2, self.feature_dim)))['params']
    params = {'backbone': bb_params, 'regression_head': head,
              'mask_token': 0.02 * jax.random.truncated_normal(k2, -2.0, 2.0,
                                                               (self.feature_dim,))}
    return params, {'teacher': {'backbone': bb_params}}

  def targets(self, teacher_backbone, x):
    """(B, N, D) regression targets from the teacher on unmasked images ``x``."""
    out = self.backbone.apply({'params': teacher_backbone}, x, train=False,
                              return_layers=True, method=ViT.encode)
    p = self.backbone.num_prefix_tokens
    m = self.config.method
    return losses.data2vec_targets([l[:, p:] for l in out['layers']], m.top_k,
                                   m.get('target_layer_norm', 'instance'),
                                   m.get('target_final_norm', 'none'))

  def loss(self, params, state, views, rng):
    m = self.config.method
    x, mask = views['view0'], views['mask']
    enc = self.backbone.apply({'params': params['backbone']}, x, train=True, mask=mask,
                              mask_token=params['mask_token'], method=ViT.encode,
                              rngs={'dropout': rng})
    pred = self.regression_head.apply({'params': params['regression_head']}, enc['patches'])
    target = jax.lax.stop_gradient(
        self.targets(jax.lax.stop_gradient(state.buffers['teacher']['backbone']), x))
    loss = losses.data2vec_loss(pred, target, mask, m.loss_beta)
    w = mask.astype(jnp.float32)[..., None]
    n = jnp.maximum(jnp.sum(w), 2.0)

    def masked_std(y):
      mu = jnp.sum(y * w, axis=(0, 1)) / n
      var = jnp.sum(((y - mu) ** 2) * w, axis=(0, 1)) / (n - 1)
      return jnp.mean(jnp.sqrt(var + 1e-6))

    metrics = {'target_std': masked_std(target), 'pred_std': masked_std(jax.lax.stop_gradient(pred)),
               'mask_ratio': jnp.mean(w), 'ema_momentum': self.momentum_fn(state.step)}
    return loss, (metrics, state.buffers)

  def features(self, params, buffers, images_uint8):
    """Student features, eval mode: the mean of the final-normed patch tokens
    (``feature_pool='mean'``, the default: the [CLS] token gets no training signal in data2vec)
    or the [CLS] token (``'cls'``)."""
    if self.config.method.get('feature_pool', 'mean') == 'cls':
      return super().features(params, buffers, images_uint8)
    out = self.backbone.apply({'params': params['backbone']}, self.normalize(images_uint8),
                              method=ViT.encode)
    return out['patches'].mean(axis=1).astype(jnp.float32)

  def after_update(self, state):
    mom = self.momentum_fn(state.step - 1)
    teacher = common.ema_update(state.buffers['teacher'],
                                {'backbone': state.params['backbone']}, mom)
    return state.replace(buffers=dict(state.buffers, teacher=teacher))
