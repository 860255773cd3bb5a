r"""data2vec for vision (Baevski et al., "data2vec: A General Framework for Self-supervised
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
  ``get_annealed_rate``; ``teacher.momentum_schedule(shape='linear')``, ``buffers['teacher']``);
* masks: BEiT block-wise masks with ratio ``mask_ratio`` from a host-precomputed bank drawn on
  device (``data.masking.BlockMaskBank``, see there);
* evaluation/export use the *student* backbone (data2vec fine-tunes the student); ``features``
  mean-pools the patch tokens (``model.pool='mean'``) since only patches are trained.

data2vec 2.0 (Baevski et al., "Efficient Self-supervised Learning with Contextualized Target
Representations for Vision, Speech and Language", ICML 2023) is ``method.student='visible'``
(1.0, above, is ``'mask_token'``, the default). Same EMA teacher and targets; the student encoder
runs on the *visible* patches only (as MAE), each image is cloned ``clone_batch`` times with
independent masks (the teacher runs once per image), a convolutional decoder
(:class:`ssl_jax.models.decoders.Data2VecConvDecoder`) gets the visible tokens back on the grid with
the masked positions filled by N(0, ``mask_noise_std``^2) noise and regresses the targets there,
and ``cls_loss`` adds the student [CLS] token regressing the mean target over the patches:

.. math:: L = \frac{1}{|M|}\sum_{t \in M} \ell(f_t, y_t)
          + \lambda_{cls} \frac{1}{B}\sum_b \ell(c_b, \tfrac1N \textstyle\sum_t y_{b,t})

(ℓ the per-token loss of ``losses.data2vec_loss``). fairseq *sums* the [CLS] term over a GPU's
B x clone_batch samples with weight 0.01 and averages the patch term, so its 0.01 is a weight of
0.01 x 256 = 2.56 on our per-image mean. Stated departures: random (MAE) masking of
``mask_ratio`` instead of inverse block masking (its 3x3 blocks do not fit small grids), and the
pre-norm ViT's final-normed tokens feed the decoder.

ViT backbones only. Metrics: ``target_std`` and ``pred_std`` (per-channel std over masked tokens;
a collapse monitor), ``mask_ratio``, ``ema_momentum``, ``patch_loss`` and ``cls_loss`` (2.0's
weighted [CLS] term; 0 for 1.0).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.data import masking
from ssl_jax.methods import teacher as teacher_lib
from ssl_jax.methods.base import Method, init_module
from ssl_jax.data.masking import BlockMaskBank
from ssl_jax.models.cpu.dense import Dense
from ssl_jax.models.decoders import Data2VecConvDecoder
from ssl_jax.models.vit import ViT

STUDENTS = ('mask_token', 'visible')


class Data2Vec(Method):
  """data2vec (vision): masked prediction of the EMA teacher's averaged top-K layers."""

  num_views = 1

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams):
    top_k: int
    mask_ratio: float
    loss_beta: float
    target_layer_norm: str = 'instance'
    target_final_norm: str = 'none'
    student: str = 'mask_token'   # one of STUDENTS
    # student='mask_token' (data2vec 1.0): block masks
    mask_bank_size: int
    mask_min_patches: int | None = None   # None / 0: no minimum
    # student='visible' (data2vec 2.0)
    clone_batch: int = 1
    decoder_dim: int
    decoder_layers: int
    decoder_kernel: int
    decoder_groups: int
    mask_noise_std: float
    cls_loss: float = 0.0
    # the teacher's EMA: momentum -> momentum_final linearly over momentum_anneal_steps (0: all)
    momentum: float
    momentum_final: float
    momentum_anneal_steps: int

  def __init__(self, config):
    super().__init__(config)
    if not isinstance(self.backbone, ViT):
      raise ValueError(f'config.model.backbone={config.model.backbone!r}: data2vec needs a ViT')
    m = self.hp
    if not 0 < m.top_k <= self.backbone.depth:
      raise ValueError(f'config.method.top_k={m.top_k} must be in [1, depth={self.backbone.depth}]')
    self.grid = config.data.image_size // config.model.patch_size
    self.num_patches = self.grid * self.grid
    self.student = m.student
    if self.student not in STUDENTS:
      raise ValueError(f'config.method.student={self.student!r}: use one of {STUDENTS} '
                       "('mask_token' = data2vec 1.0, 'visible' = data2vec 2.0)")
    if self.student == 'visible':
      self.clone_batch = m.clone_batch
      if self.clone_batch < 1:
        raise ValueError(f'config.method.clone_batch={self.clone_batch} must be >= 1')
      if not 0 < masking.num_kept(self.num_patches, m.mask_ratio) < self.num_patches:
        raise ValueError(f'config.method.mask_ratio={m.mask_ratio} leaves no visible or no '
                         f'masked patch of {self.num_patches}')
      if m.cls_loss > 0 and not self.backbone.num_prefix_tokens:
        raise ValueError('config.method.cls_loss > 0 needs a ViT with a [CLS] token '
                         '(num_prefix_tokens >= 1)')
      g = m.decoder_groups
      if g < 1 or self.feature_dim % g or m.decoder_dim % g:
        raise ValueError(f'config.method.decoder_groups={g} must divide the embed dim '
                         f'({self.feature_dim}) and config.method.decoder_dim ({m.decoder_dim})')
      self.decoder = Data2VecConvDecoder((self.grid, self.grid), self.feature_dim,
                                         m.decoder_dim, m.decoder_layers, m.decoder_kernel,
                                         m.decoder_groups)
    else:
      self.mask_bank = BlockMaskBank(self.grid, (m.mask_ratio, m.mask_ratio),
                                     size=m.mask_bank_size, seed=config.seed,
                                     min_num_patches=m.mask_min_patches or None)
      self.regression_head = Dense(self.feature_dim, name='regression_head')
    self.momentum_fn = teacher_lib.momentum_schedule(
        m, m.momentum_anneal_steps or config.train.steps, shape='linear')

  def views(self, batch, rng):
    k_aug, k_mask = jax.random.split(rng)
    out = super().views(batch, k_aug)
    b = batch['view0'].shape[0]
    if self.student == 'visible':   # clone_batch independent masks per image, clones adjacent
      out.update(masking.random_masking(k_mask, b * self.clone_batch, self.num_patches,
                                        self.hp.mask_ratio))
    else:
      out['mask'] = self.mask_bank.sample(k_mask, b)
    return out

  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    bb_params, _ = init_module(self.backbone, k1, x)
    if self.student == 'visible':
      dec = self.decoder.init(k2, jnp.zeros((2, self.num_patches, self.feature_dim)))['params']
      params = {'backbone': bb_params, 'decoder': dec}
      return params, {'teacher': teacher_lib.from_student(params, ('backbone',))}
    head = self.regression_head.init(k2, jnp.zeros((2, self.feature_dim)))['params']
    params = {'backbone': bb_params, 'regression_head': head,
              'mask_token': 0.02 * jax.random.truncated_normal(k2, -2.0, 2.0,
                                                               (self.feature_dim,))}
    return params, {'teacher': teacher_lib.from_student(params, ('backbone',))}

  def targets(self, teacher_backbone, x):
    """(B, N, D) regression targets from the teacher on unmasked images ``x``."""
    out = self.backbone.apply({'params': teacher_backbone}, x, train=False,
                              return_layers=True, method=ViT.encode)
    p = self.backbone.num_prefix_tokens
    m = self.hp
    return losses.data2vec_targets([l[:, p:] for l in out['layers']], m.top_k,
                                   m.target_layer_norm, m.target_final_norm)

  def _student_mask_token(self, params, x, views, target, rng):
    """data2vec 1.0: mask tokens in the encoder input, linear head on every patch token."""
    enc = self.backbone.apply({'params': params['backbone']}, x, train=True, mask=views['mask'],
                              mask_token=params['mask_token'], method=ViT.encode,
                              rngs={'dropout': rng})
    pred = self.regression_head.apply({'params': params['regression_head']}, enc['patches'])
    return pred, target, 0.0

  def _student_visible(self, params, x, views, target, rng):
    """data2vec 2.0: encoder on the visible patches of clone_batch masked copies, conv decoder on
    the grid with noise at the masked positions; returns the extra [CLS] loss too."""
    m = self.hp
    k_drop, k_noise = jax.random.split(rng)
    xs = jnp.repeat(x, self.clone_batch, axis=0)
    target = jnp.repeat(target, self.clone_batch, axis=0)
    enc = self.backbone.apply({'params': params['backbone']}, xs, train=True,
                              ids_keep=views['ids_keep'], method=ViT.encode,
                              rngs={'dropout': k_drop})
    vis = enc['patches']
    b, k, d = vis.shape
    noise = m.mask_noise_std * jax.random.normal(k_noise, (b, self.num_patches - k, d), vis.dtype)
    grid = masking.unshuffle(jnp.concatenate([vis, noise], axis=1), views['ids_restore'])
    pred = self.decoder.apply({'params': params['decoder']}, grid)
    cls = 0.0
    if m.cls_loss > 0:
      cls_target = jnp.mean(target, axis=1, keepdims=True)
      cls = m.cls_loss * losses.data2vec_loss(enc['prefix'][:, :1], cls_target,
                                              jnp.ones((b, 1)), m.loss_beta)
    return pred, target, cls

  def loss(self, params, state, views, rng):
    m = self.hp
    x, mask = views['view0'], views['mask']
    target = jax.lax.stop_gradient(
        self.targets(jax.lax.stop_gradient(state.buffers['teacher']['params']['backbone']), x))
    student = (self._student_visible if self.student == 'visible'
               else self._student_mask_token)
    pred, target, cls = student(params, x, views, target, rng)
    patch_loss = losses.data2vec_loss(pred, target, mask, m.loss_beta)
    loss = patch_loss + cls
    w = mask.astype(jnp.float32)[..., None]
    n = jnp.maximum(jnp.sum(w), 2.0)

    def masked_std(y):
      mu = jnp.sum(y * w, axis=(0, 1)) / n
      var = jnp.sum(((y - mu) ** 2) * w, axis=(0, 1)) / (n - 1)
      return jnp.mean(jnp.sqrt(var + 1e-6))

    metrics = {'target_std': masked_std(target), 'pred_std': masked_std(jax.lax.stop_gradient(pred)),
               'mask_ratio': jnp.mean(w), 'ema_momentum': self.momentum_fn(state.step),
               'patch_loss': patch_loss, 'cls_loss': jnp.asarray(cls, jnp.float32)}
    return loss, (metrics, state.buffers)

  # ``features`` is the base class's (student backbone, eval mode), pooled per ``model.pool``:
  # 'mean' of the final-normed patch tokens (configs/data2vec.py: in data2vec 1.0 the [CLS] token
  # gets no training signal) or 'token', the [CLS] token (data2vec 2.0's ``cls_loss`` trains it).

  def after_update(self, state):
    return teacher_lib.update(state, self.momentum_fn)
