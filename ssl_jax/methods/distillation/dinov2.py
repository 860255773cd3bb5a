"""DINOv2 (Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024).

DINO's image-level self-distillation on the [CLS] token plus iBOT's masked-patch
self-distillation, with the changes of the paper's Sec. 4 (and the official ``ssl_meta_arch.py``):

* untied heads: a ``dino_head`` for the [CLS] token of every crop and a separate ``ibot_head``
  for the patch tokens (``DINOHead`` each, with their own prototypes; ``patch_out_dim``,
  ``patch_bottleneck_dim``); both have an EMA copy in the teacher (``buffers['teacher']``, the
  layout of ``methods/teacher.py``, updated in DINO's ``after_update``);
* KoLeo regulariser (``losses.koleo_loss``) on the student backbone's [CLS] features of each
  global crop, weight ``koleo_weight`` (0.1), nearest neighbours over the global batch;
* teacher targets by Sinkhorn-Knopp (``centering='sinkhorn_knopp'``, 3 iterations,
  ``losses.sinkhorn_knopp_targets``; patch codes over the masked patches of the global batch) or
  DINO's running centers (``centering='center'``, momentum ``center_momentum``, the official
  default before the ViT-L/g recipes);
* multi-crop: 2 global crops to teacher and student, ``num_local_crops`` local crops to the
  student (DINO head only); the student's global crops are block-masked (``data.masking``
  ``BlockMaskBank``, BEiT blocks): an image is masked with probability ``mask_prob`` (0.5) at a
  ratio ~ U(``mask_ratio_range``) = U(0.1, 0.5); local crops are never masked; the teacher sees
  the unmasked global crops;
* loss (``losses.dinov2_loss``): ``dino_weight * L_dino + ibot_weight * L_ibot +
  koleo_weight * sum_q L_koleo(cls_q)``;
* schedules: teacher temperature 0.04 -> 0.07 (linear warm-up, [CLS] and patches alike), EMA
  momentum 0.992 -> 1 (cosine), weight decay 0.04 -> 0.2 (cosine, ``weight_decay_end``), lr
  linear warm-up then cosine, layer-wise lr decay ``layer_decay`` (0.9 by default, 1.0 for the
  ViT-L/g recipes) with the patch embedding's lr times ``patch_embed_lr_mult`` (0.2), stochastic
  depth from ``config.model.drop_path_rate``;
* optimiser: AdamW; gradients clipped to ``optim.clip_grad_norm`` (3.0) by global norm per module
  (backbone, each head; the official clips each student module), the heads' last layers frozen
  for ``freeze_last_layer_steps`` updates.

Differences from the official code, on purpose: KoLeo's neighbours are searched in the global
batch (the official code uses each GPU's batch), so the result does not depend on the device
count; masks come from a bank of BEiT block masks with a Bernoulli(``mask_prob``) per image (the
official collate masks exactly half of the global crops with stratified ratios); stochastic
depth follows ``models.vit`` (linear in depth; DINOv2's is uniform).

Evaluation and export use the teacher backbone (as DINO). Metrics: ``dino_loss``, ``ibot_loss``,
``koleo_loss`` (unweighted), ``mask_ratio``, ``teacher_entropy``, ``teacher_marginal_entropy``,
``teacher_patch_entropy``, ``teacher_temp``.
"""
from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import optax

from ssl_jax import losses
from ssl_jax import optim as schedules
from ssl_jax.data.masking import BlockMaskBank
from ssl_jax.methods import teacher as teacher_lib
from ssl_jax.methods.distillation import ibot
from ssl_jax.methods.base import apply_module, init_module
from ssl_jax.methods.distillation.dino import DINO, zero_updates_until
from ssl_jax.models.heads import DINOHead
from ssl_jax.models.vit import ViT

CENTERINGS = ('sinkhorn_knopp', 'center')
HEADS = ('dino_head', 'ibot_head')


def layer_id(path, depth: int) -> int:
  """DINOv2's layer index of a parameter (``get_vit_lr_decay_rate``): 0 for the embeddings and
  tokens (patch embedding, position embedding, [CLS], registers, mask token), i + 1 for block i,
  depth + 1 for the rest (final norm, heads)."""
  keys = [str(getattr(k, 'key', k)) for k in path]
  if keys[0] == 'mask_token':
    return 0
  if keys[0] != 'backbone':
    return depth + 1
  for k in keys[1:]:
    block = re.fullmatch(r'blocks_(\d+)', k)
    if block:
      return int(block.group(1)) + 1
  return depth + 1 if keys[1] == 'norm' else 0


def lr_multipliers(params, depth: int, layer_decay: float, patch_embed_mult: float):
  """Per-leaf lr factors ``layer_decay ** (depth + 1 - layer_id)``, times ``patch_embed_mult``
  on the patch embedding (DINOv2's ``layerwise_decay`` and ``patch_embed_lr_mult``)."""
  def mult(path, _):
    m = layer_decay ** (depth + 1 - layer_id(path, depth))
    keys = [str(getattr(k, 'key', k)) for k in path]
    return m * patch_embed_mult if 'patch_embed' in keys else m
  return jax.tree_util.tree_map_with_path(mult, params)


def scale_by_layer_decay(depth: int, layer_decay: float,
                         patch_embed_mult: float) -> optax.GradientTransformation:
  """Multiplies each leaf's update by its :func:`lr_multipliers` factor (chained after AdamW, so
  the lr and the decoupled weight decay are scaled alike, as DINOv2's per-group lr)."""
  def update(updates, state, params=None):
    del params
    factors = lr_multipliers(updates, depth, layer_decay, patch_embed_mult)
    return jax.tree_util.tree_map(lambda u, f: u * f, updates, factors), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def clip_by_module_norm(max_norm: float) -> optax.GradientTransformation:
  """Clips each top-level params subtree (backbone, dino_head, ibot_head, ...) to global L2 norm
  ``max_norm`` separately (DINOv2 calls ``clip_grad_norm_`` on each student module)."""
  def update(updates, state, params=None):
    del params
    return {k: optax.clip_by_global_norm(max_norm).update(u, optax.EmptyState())[0]
            for k, u in updates.items()}, state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def last_layers_mask(tree):
  """True for both heads' weight-normed last layers (frozen at the start)."""
  def is_last(path, _):
    keys = [str(getattr(k, 'key', k)) for k in path]
    return keys[0].endswith('head') and any(k.startswith('last_layer') for k in keys)
  return jax.tree_util.tree_map_with_path(is_last, tree)


class DINOv2(DINO):
  """DINOv2: DINO [CLS] + iBOT patch self-distillation, untied heads, KoLeo, Sinkhorn-Knopp."""

  teacher_keys = ('backbone', 'dino_head', 'ibot_head')

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(DINO.Hparams):
    patch_out_dim: int
    patch_bottleneck_dim: int | None = None   # None: bottleneck_dim
    centering: str = 'sinkhorn_knopp'
    sinkhorn_iterations: int = 3
    mask_ratio_range: tuple[float, float]
    mask_prob: float
    mask_bank_size: int = 4096
    mask_min_patches: int | None = None     # None / 0: (grid // 3) ** 2, as iBOT
    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    layer_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    if not isinstance(self.backbone, ViT) or self.backbone.num_prefix_tokens < 1:
      raise ValueError(f'config.model.backbone={config.model.backbone!r}: DINOv2 needs a ViT '
                       'with a [CLS] token (patch tokens and a mask token)')
    if m.centering not in CENTERINGS:
      raise ValueError(f'config.method.centering={m.centering!r}: use one of {CENTERINGS}')
    self.grid = config.data.image_size // config.model.patch_size
    self.mask_bank = BlockMaskBank(
        self.grid, tuple(m.mask_ratio_range), size=m.mask_bank_size, seed=config.seed,
        min_num_patches=m.mask_min_patches or None, mask_prob=m.mask_prob)
    self.ibot_head = DINOHead(
        out_dim=m.patch_out_dim, hidden_dim=m.hidden_dim,
        bottleneck_dim=m.patch_bottleneck_dim or m.bottleneck_dim, num_layers=m.num_layers,
        norm_last_layer=m.norm_last_layer, use_bn=m.use_bn_in_head)

  # -- data ---------------------------------------------------------------------------------------
  def views(self, batch, rng):
    """DINO's crops plus (2, B, N) masks of the two global crops (True = masked), as iBOT's."""
    return ibot.masked_global_views(super().views, self.mask_bank, batch, rng)

  # -- state --------------------------------------------------------------------------------------
  def init(self, rng, batch):
    k1, k2, k3 = jax.random.split(rng, 3)
    x = jnp.zeros((2,) + batch['global0'].shape[1:], jnp.float32)
    bb_params, _ = init_module(self.backbone, k1, x)
    d = self.feature_dim
    dino_params, dino_stats = init_module(self.head, k2, jnp.zeros((2, d), jnp.float32))
    ibot_params, ibot_stats = init_module(self.ibot_head, k3, jnp.zeros((2, 4, d), jnp.float32))
    params = {'backbone': bb_params, 'dino_head': dino_params, 'ibot_head': ibot_params,
              'mask_token': jnp.zeros((d,), jnp.float32)}
    stats = {k: v for k, v in (('dino_head', dino_stats), ('ibot_head', ibot_stats)) if v}
    buffers = {'teacher': teacher_lib.from_student(params, self.teacher_keys, stats)}
    if self.hp.centering == 'center':
      buffers['center'] = jnp.zeros((1, self.hp.out_dim), jnp.float32)
      buffers['patch_center'] = jnp.zeros((1, self.hp.patch_out_dim), jnp.float32)
    if stats:
      buffers['batch_stats'] = stats
    return params, buffers

  # -- forward pieces -----------------------------------------------------------------------------
  def _heads(self, params, stats, cls, patches):
    """The DINO head on ``cls`` (B', D) and the iBOT head on ``patches`` (B, N, D), in train mode
    (teacher heads too, as DINO), with ``stats`` {head name: its BatchNorm statistics, {} for
    none} of the student or of the teacher; returns (cls logits, patch logits, new head stats)."""
    s_dino, new_dino = apply_module(self.head, params['dino_head'], stats['dino_head'], cls,
                                    train=True)
    s_ibot, new_ibot = apply_module(self.ibot_head, params['ibot_head'], stats['ibot_head'],
                                    patches, train=True)
    return s_dino, s_ibot, {'dino_head': new_dino, 'ibot_head': new_ibot}

  def _student(self, params, buffers, views, rng):
    """Student logits: [CLS] (V, B, K) of every crop, patches (2, B, N, K') of the masked global
    crops, the global crops' backbone [CLS] features (2, B, D) for KoLeo, new head stats."""
    b = views['global0'].shape[0]
    k_g, k_l = jax.random.split(rng)
    globals_ = jnp.concatenate([views['global0'], views['global1']])
    enc = self.backbone.apply({'params': params['backbone']}, globals_, train=True,
                              mask=views['masks'].reshape(2 * b, -1),
                              mask_token=params['mask_token'], method=ViT.encode,
                              rngs={'dropout': k_g})
    cls = [enc['prefix'][:, 0]]
    if self.num_local:   # local crops: never masked, DINO head only
      locals_ = jnp.concatenate([views[f'local{i}'] for i in range(self.num_local)])
      loc = self.backbone.apply({'params': params['backbone']}, locals_, train=True,
                                method=ViT.encode, rngs={'dropout': k_l})
      cls.append(loc['prefix'][:, 0])
    s_cls, s_patch, stats = self._heads(params, {n: self._stats(buffers, n) for n in HEADS},
                                        jnp.concatenate(cls), enc['patches'])
    return (s_cls.reshape(2 + self.num_local, b, -1), s_patch.reshape(2, b, *s_patch.shape[1:]),
            cls[0].reshape(2, b, -1), stats)

  def _teacher(self, buffers, views):
    """Teacher logits of the unmasked global crops: [CLS] (2, B, K), patches (2, B, N, K')."""
    b = views['global0'].shape[0]
    teacher = jax.lax.stop_gradient(buffers['teacher']['params'])
    globals_ = jnp.concatenate([views['global0'], views['global1']])
    enc = self.backbone.apply({'params': teacher['backbone']}, globals_, train=False,
                              method=ViT.encode)
    t_cls, t_patch, stats = self._heads(
        teacher, {n: teacher_lib.stats_of(buffers['teacher'], n) for n in HEADS},
        enc['prefix'][:, 0], enc['patches'])
    t_cls = jax.lax.stop_gradient(t_cls).reshape(2, b, -1)
    t_patch = jax.lax.stop_gradient(t_patch).reshape(2, b, *t_patch.shape[1:])
    return t_cls, t_patch, stats

  def teacher_targets(self, buffers, t_cls, t_patch, masks, temp):
    """Teacher probabilities ([CLS], patches) and the new center buffers: Sinkhorn-Knopp codes
    over the global batch (patch codes over the masked patches), or DINO's centred softmax with
    the *old* centers, the new ones returned."""
    m = self.hp
    if m.centering == 'sinkhorn_knopp':
      return (losses.sinkhorn_knopp_targets(t_cls, temp, m.sinkhorn_iterations),
              losses.sinkhorn_knopp_targets(t_patch, temp, m.sinkhorn_iterations, valid=masks),
              {})
    center, pcenter = buffers['center'], buffers['patch_center']
    probs = jax.nn.softmax((t_cls - center.reshape(1, 1, -1)) / temp, axis=-1)
    pprobs = jax.nn.softmax((t_patch - pcenter.reshape(1, 1, 1, -1)) / temp, axis=-1)
    return probs, pprobs, {'center': losses.ema_center(center, t_cls, m.center_momentum),
                           'patch_center': losses.ema_center(pcenter, t_patch, m.center_momentum)}

  # -- training -----------------------------------------------------------------------------------
  def loss(self, params, state, views, rng):
    m = self.hp
    buffers = state.buffers
    masks = views['masks']
    s_cls, s_patch, s_feat, s_stats = self._student(params, buffers, views, rng)
    t_cls, t_patch, t_stats = self._teacher(buffers, views)
    temp = self.teacher_temp_fn(state.step)
    probs, pprobs, centers = self.teacher_targets(buffers, t_cls, t_patch, masks, temp)
    loss, parts = losses.dinov2_loss(s_cls, probs, s_patch, pprobs, masks, s_feat,
                                     m.student_temp, m.dino_weight, m.ibot_weight, m.koleo_weight)
    new_buffers = dict(buffers, **centers)
    if 'batch_stats' in buffers:
      new_buffers['batch_stats'] = {k: v for k, v in s_stats.items() if v}
      new_buffers['teacher'] = teacher_lib.with_stats(buffers['teacher'], **t_stats)
    ent, marginal = losses.distribution_entropy(probs)
    p_ent, _ = losses.distribution_entropy(pprobs * masks[..., None])
    metrics = dict(parts, mask_ratio=jnp.mean(masks.astype(jnp.float32)), teacher_entropy=ent,
                   teacher_marginal_entropy=marginal, teacher_patch_entropy=p_ent,
                   teacher_temp=temp)
    return loss, (metrics, new_buffers)

  def build_optimizer(self, total_steps: int):
    """AdamW with the cosine weight-decay schedule, layer-wise lr decay (patch embedding x
    ``patch_embed_lr_mult``), per-module clipping and the heads' last layers frozen at first."""
    o, m = self.config.optim, self.hp
    if o.name != 'adamw':
      raise ValueError(f'config.optim.name={o.name!r}: DINOv2 trains with adamw')
    peak = schedules.scaled_lr(o, self.config.data.batch_size)
    lr = schedules.warmup_cosine(peak, o.warmup_steps, total_steps, peak * o.min_lr_ratio)
    wd_end = o.weight_decay if m.weight_decay_end is None else m.weight_decay_end
    wd = schedules.cosine_increase(o.weight_decay, wd_end, total_steps)
    parts = []
    if o.clip_grad_norm > 0:
      parts.append(clip_by_module_norm(o.clip_grad_norm))
    parts.append(optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=wd, mask=schedules.decay_mask))
    if m.layer_decay != 1.0 or m.patch_embed_lr_mult != 1.0:
      parts.append(scale_by_layer_decay(self.backbone.depth, m.layer_decay,
                                        m.patch_embed_lr_mult))
    if m.freeze_last_layer_steps > 0:
      parts.append(zero_updates_until(m.freeze_last_layer_steps, last_layers_mask))
    return optax.chain(*parts), lr
