"""iBOT (Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022).

DINO's [CLS] self-distillation (``losses.dino_loss``, over all (teacher global, student crop)
pairs except same-view ones) plus masked image modelling with the EMA teacher as an online
tokenizer (``losses.ibot_patch_loss``):

* the student's two global crops are block-wise masked: masked patch embeddings are replaced by
  the learned ``params['mask_token']`` (zeros at init, as iBOT's ``masked_embed``); local crops
  are never masked; the teacher sees the unmasked global crops;
* at each masked patch the student predicts the teacher's centred, sharpened patch distribution
  of the same view (patch center ``buffers['patch_center']``, momentum ``center_momentum``,
  temperatures ``teacher_patch_temp`` with its own warm-up);
* head: one ``DINOHead`` MLP for [CLS] and patch tokens; ``shared_head=True`` also shares the last
  layer (``patch_out_dim`` must equal ``out_dim``), otherwise the patches get a separate
  weight-normed ``last_layer2`` of width ``patch_out_dim`` (iBOT's ``iBOTHead``);
* total loss = ``lambda1 * cls + lambda2 * patch``.

Masks: iBOT draws BEiT block-wise masks in the data loader. Here they come from a bank of BEiT
masks precomputed on the host at construction (``data.masking.BlockMaskBank``) and drawn
per image on device inside ``views`` (jittable, keyed by the step key, no pipeline change). Each
image is masked with probability ``mask_prob`` (0.5, iBOT's ``--pred_ratio 0 0.3``) at a ratio
``~ U(mask_ratio_range)`` (0.1..0.5, iBOT's ``pred_ratio 0.3 +- 0.2``).

Everything else (multi-crop, EMA teacher, centers updated after the loss from the global batch,
schedules, frozen last layer, per-tensor clipping, teacher features for evaluation) is DINO's.
ViT backbones only. Extra metrics: ``cls_loss``, ``patch_loss``, ``mask_ratio``,
``teacher_patch_entropy``.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods import teacher as teacher_lib
from ssl_jax.methods.base import apply_module, init_module
from ssl_jax.methods.distillation.dino import DINO
from ssl_jax.data.masking import BlockMaskBank
from ssl_jax.models.vit import ViT
from ssl_jax import optim as schedules



def masked_global_views(dino_views, mask_bank, batch, rng):
  """DINO's crops (``dino_views(batch, key)``) plus (2, B, N) block masks of the two global crops
  (True = masked), the local crops unmasked: iBOT's and DINOv2's views."""
  k_aug, k_mask = jax.random.split(rng)
  out = dino_views(batch, k_aug)
  b = batch['global0'].shape[0]
  out['masks'] = mask_bank.sample(k_mask, 2 * b).reshape(2, b, -1)
  return out

class IBOT(DINO):
  """iBOT: DINO + masked-patch self-distillation with an online tokenizer."""

  teacher_keys = ('backbone', 'head')

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(DINO.Hparams):
    patch_out_dim: int
    shared_head: bool
    mask_ratio_range: tuple[float, float]
    mask_prob: float
    mask_bank_size: int
    mask_min_patches: int | None = None   # None / 0: no minimum
    teacher_patch_temp: float
    warmup_teacher_patch_temp: float
    lambda1: float
    lambda2: float

  def __init__(self, config):
    super().__init__(config)
    if not isinstance(self.backbone, ViT):
      raise ValueError(f'config.model.backbone={config.model.backbone!r}: iBOT needs a ViT '
                       '(patch tokens and a mask token)')
    m = self.hp
    if self.backbone.num_prefix_tokens != 1:
      raise ValueError('iBOT needs a ViT with exactly one prefix ([CLS]) token')
    if m.shared_head and m.patch_out_dim != m.out_dim:
      raise ValueError(f'config.method.patch_out_dim={m.patch_out_dim} must equal out_dim='
                       f'{m.out_dim} when shared_head=True')
    self.grid = config.data.image_size // config.model.patch_size
    self.mask_bank = BlockMaskBank(
        self.grid, tuple(m.mask_ratio_range), size=m.mask_bank_size, seed=config.seed,
        min_num_patches=m.mask_min_patches or None, mask_prob=m.mask_prob)
    self.teacher_patch_temp_fn = schedules.linear_warmup_constant(
        m.warmup_teacher_patch_temp, m.teacher_patch_temp, m.warmup_teacher_temp_steps)

  def _make_head(self):
    m = self.hp
    return super()._make_head(patch_out_dim=0 if m.shared_head else m.patch_out_dim)

  def _head_tokens(self, head_params, stats, tokens):
    """(B, 1 + N, D) tokens -> ([CLS] logits (B, K), patch logits (B, N, K'), new head BN
    stats). With ``use_bn_in_head`` the BatchNorm statistics run over batch and tokens (the
    official CustomSequential)."""
    out, stats = apply_module(self.head, head_params, stats, tokens, train=True)
    if isinstance(out, tuple):
      return out[0][:, 0], out[1], stats
    return out[:, 0], out[:, 1:], stats

  # -- data ---------------------------------------------------------------------------------------
  def views(self, batch, rng):
    return masked_global_views(super().views, self.mask_bank, batch, rng)

  # -- state --------------------------------------------------------------------------------------
  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    x = jnp.zeros((2,) + batch['global0'].shape[1:], jnp.float32)
    bb_params, bb_stats = init_module(self.backbone, k1, x)
    tokens = jnp.zeros((2, 1 + self.grid * self.grid, self.feature_dim), jnp.float32)
    hd_params, hd_stats = init_module(self.head, k2, tokens)
    params = {'backbone': bb_params, 'head': hd_params,
              'mask_token': jnp.zeros((self.feature_dim,), jnp.float32)}
    buffers = self._buffers(params, bb_stats, hd_stats)
    buffers['patch_center'] = jnp.zeros((1, self.hp.patch_out_dim), jnp.float32)
    return params, buffers

  # -- training -------------------------------------------------------------------------------------
  def loss(self, params, state, views, rng):
    m = self.hp
    buffers = state.buffers
    b = views['global0'].shape[0]
    k_g, k_l = jax.random.split(rng)
    globals_ = jnp.concatenate([views['global0'], views['global1']])
    masks = views['masks']                                          # (2, B, N)

    # Student: masked global crops (all tokens), unmasked local crops ([CLS] only).
    enc = self.backbone.apply({'params': params['backbone']}, globals_, train=True,
                              mask=masks.reshape(2 * b, -1), mask_token=params['mask_token'],
                              method=ViT.encode, rngs={'dropout': k_g})
    s_cls_g, s_patch, s_stats = self._head_tokens(params['head'], self._stats(buffers, 'head'),
                                                  enc['tokens'])
    s_cls = [s_cls_g]
    if self.num_local:
      locals_ = jnp.concatenate([views[f'local{i}'] for i in range(self.num_local)])
      f_loc, _ = apply_module(self.backbone, params['backbone'], {}, locals_, train=True,
                              rngs={'dropout': k_l})
      out, s_stats = apply_module(self.head, params['head'], s_stats, f_loc, train=True)
      s_cls.append(out)  # 2-D input: the [CLS] last layer
    student_cls = jnp.concatenate(s_cls).reshape(2 + self.num_local, b, -1)
    student_patch = s_patch.reshape(2, b, *s_patch.shape[1:])

    # Teacher: unmasked global crops.
    teacher = jax.lax.stop_gradient(buffers['teacher']['params'])
    t_enc = self.backbone.apply({'params': teacher['backbone']}, globals_, train=False,
                                method=ViT.encode)
    t_cls, t_patch, t_stats = self._head_tokens(teacher['head'],
                                                teacher_lib.stats_of(buffers['teacher'], 'head'),
                                                t_enc['tokens'])
    t_cls = jax.lax.stop_gradient(t_cls).reshape(2, b, -1)
    t_patch = jax.lax.stop_gradient(t_patch).reshape(2, b, *t_patch.shape[1:])

    temp = self.teacher_temp_fn(state.step)
    ptemp = self.teacher_patch_temp_fn(state.step)
    center, pcenter = buffers['center'], buffers['patch_center']
    cls_loss = losses.dino_loss(student_cls, t_cls, center, m.student_temp, temp)
    patch_loss = losses.ibot_patch_loss(student_patch, t_patch, masks, pcenter, m.student_temp,
                                        ptemp)
    loss = m.lambda1 * cls_loss + m.lambda2 * patch_loss

    ent, marginal = losses.softmax_entropy(t_cls, temp, center)
    p_ent, _ = losses.softmax_entropy(t_patch, ptemp, pcenter)
    new_buffers = dict(buffers,
                       center=losses.ema_center(center, t_cls, m.center_momentum),
                       patch_center=losses.ema_center(pcenter, t_patch, m.center_momentum),
                       **self._new_stats(buffers, {}, {}, (s_stats, t_stats)))
    metrics = {'cls_loss': cls_loss, 'patch_loss': patch_loss,
               'mask_ratio': jnp.mean(masks.astype(jnp.float32)),
               'teacher_entropy': ent, 'teacher_marginal_entropy': marginal,
               'teacher_patch_entropy': p_ent, 'teacher_temp': temp}
    return loss, (metrics, new_buffers)
