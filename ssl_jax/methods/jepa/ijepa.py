r"""I-JEPA (Assran et al., "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture", CVPR 2023).

One crop per image. Per image, ``num_targets`` (4) target blocks and one context block from which
the targets are removed (:func:`ssl_jax.data.masking.multiblock_masks`, the official multi-block
collator drawn on device with static token counts). The *context encoder* (the student ViT)
encodes the context patches only (MAE-style ``ids_keep``); for each target block the narrow
predictor (:class:`ssl_jax.models.predictors.JEPAPredictor`) gets the context tokens plus mask
tokens at the block's positions and predicts the *target encoder*'s outputs there; the target
encoder, an EMA of the context encoder, sees the whole image, and its final-normed patch tokens
are layer-normed again per token without affine parameters (the official
``F.layer_norm(h, (h.size(-1),))``):

.. math:: \mathcal{L} = \frac{1}{M} \sum_{i=1}^{M} \frac{1}{|B_i|} \sum_{j \in B_i}
          \ell\big(\hat s_{y_j},\ \mathrm{LN}(\bar f(x))_{y_j}\big)

with ``loss='smooth_l1'`` (the official code's ``F.smooth_l1_loss``, the default) or ``'l2'``
(the paper's Eq. 1), each averaged over channels (``losses.ijepa_loss``).

Choices, stated (checked against facebookresearch/ijepa, src/train.py, src/masks/multiblock.py,
src/models/vision_transformer.py and configs/in1k_vith14_ep300.yaml):

* the context is encoded once per image and repeated for each of the M target blocks in the
  predictor (the official ``repeat_interleave_batch``); the loss averages over all of them;
* static token counts ``num_target_tokens`` / ``num_context_tokens`` (0: the defaults of
  :func:`ssl_jax.data.masking.multiblock_token_counts`, computed once on the host) instead of the
  official per-batch minimum, so shapes stay static under jit;
* EMA momentum linear from ``momentum`` (0.996) to ``momentum_final`` (1.0) over the run (the
  official schedule with ``ipe_scale`` 1); AdamW with the weight decay increasing cosine-wise from
  ``optim.weight_decay`` (0.04) to ``weight_decay_end`` (0.4) (the official
  ``CosineWDSchedule``), lr warm-up linear from ``warmup_start_lr_ratio`` x peak (official
  start_lr 2e-4 of lr 1e-3) then cosine to ``optim.min_lr_ratio`` x peak; no gradient clipping;
* the encoders are ViTs with fixed sin-cos position embeddings and no [CLS] token
  (``model.pos_embed='sincos'``, ``num_prefix_tokens=0``), as the official ``VisionTransformer``;
  initialisation is this library's ViT's (xavier-uniform), not the official truncated normal with
  depth-rescaled projections;
* evaluation and export use the *target* encoder, average-pooled over the last layer's patch
  tokens (``model.pool='mean'``), as the paper's linear probes (Sec. 5). The attentive probe of
  the paper's low-shot evaluations is not implemented.

Metrics: ``target_std`` and ``pred_std`` (per-channel std over target tokens; a collapse monitor),
``ema_momentum``, ``context_tokens`` and ``target_tokens`` (the static counts).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from ssl_jax import losses
from ssl_jax import optim as schedules
from ssl_jax.data import masking
from ssl_jax.methods import common, teacher
from ssl_jax.methods.base import Method, init_module
from ssl_jax.models.predictors import JEPAPredictor
from ssl_jax.models.vit import ViT


class IJEPA(Method):
  """I-JEPA: predict the EMA target encoder's layer-normed tokens of masked blocks from a context
  block, in latent space."""

  num_views = 1

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(common.EMAHparams, Method.Hparams):
    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    num_target_tokens: int = 0     # 0: the smallest target block (no target is ever padded)
    num_context_tokens: int = 0    # 0: the 1 % quantile of the context sizes
    pred_dim: int = 384
    pred_depth: int = 12
    pred_heads: int = 12
    loss: str = 'smooth_l1'        # one of losses.IJEPA_LOSSES
    weight_decay_end: float | None = None   # None: optim.weight_decay throughout
    warmup_start_lr_ratio: float = 0.0

  def __init__(self, config):
    super().__init__(config)
    if not isinstance(self.backbone, ViT):
      raise ValueError(f'config.model.backbone={config.model.backbone!r}: I-JEPA needs a ViT')
    m = self.hp
    if m.loss not in losses.IJEPA_LOSSES:
      raise ValueError(f'config.method.loss={m.loss!r}: use one of {losses.IJEPA_LOSSES}')
    self.grid = config.data.image_size // config.model.patch_size
    if self.grid < 4:
      raise ValueError(f'data.image_size / model.patch_size = {self.grid} patches a side: I-JEPA '
                       'blocks need a grid of at least 4x4 (use smaller patches)')
    self.mask_kw = dict(num_targets=m.num_targets, target_scale=m.target_scale,
                        target_aspect=m.target_aspect, context_scale=m.context_scale)
    num_t, num_c = m.num_target_tokens, m.num_context_tokens
    if not (num_t and num_c):
      auto_t, auto_c = masking.multiblock_token_counts(self.grid, seed=config.seed, **self.mask_kw)
      num_t, num_c = num_t or auto_t, num_c or auto_c
    n = self.grid * self.grid
    if not (0 < num_t <= n and 0 < num_c <= n):
      raise ValueError(f'config.method.num_target_tokens={num_t} / num_context_tokens={num_c} '
                       f'must be in [1, {n}] (0 = the defaults)')
    self.num_target_tokens, self.num_context_tokens = num_t, num_c
    self.predictor = JEPAPredictor(self.grid, self.feature_dim, m.pred_dim, m.pred_depth,
                                   m.pred_heads, dtype=self.backbone.dtype)
    total = config.train.steps
    self.momentum_fn = schedules.linear_warmup_constant(m.momentum, m.momentum_final, total)

  def masks(self, rng, batch: int):
    """The multi-block masks of one global batch (see ``masking.multiblock_masks``)."""
    return masking.multiblock_masks(rng, batch, self.grid, num_target_tokens=self.num_target_tokens,
                                    num_context_tokens=self.num_context_tokens, **self.mask_kw)

  def views(self, batch, rng):
    k_aug, k_mask = jax.random.split(rng)
    out = super().views(batch, k_aug)
    m = self.masks(k_mask, out['view0'].shape[0])
    out.update(context_ids=m['context_ids'], target_ids=m['target_ids'])
    return out

  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    x = jnp.zeros((2,) + batch['view0'].shape[1:], jnp.float32)
    bb, _ = init_module(self.backbone, k1, x)
    ctx = jnp.zeros((2, self.num_context_tokens, self.feature_dim), jnp.float32)
    ids = jnp.zeros((2, self.num_context_tokens), jnp.int32)
    tgt = jnp.zeros((2, self.num_target_tokens), jnp.int32)
    pred = self.predictor.init({'params': k2}, ctx, ids, tgt)['params']
    params = {'backbone': bb, 'predictor': pred}
    return params, {'teacher': teacher.from_student(params, ['backbone'])}   # the target encoder

  def targets(self, teacher_backbone, x, target_ids):
    """(B, M, Kt, D): the target encoder's final-normed patch tokens on the whole image, layer-
    normed per token (no affine), at each target block's patches."""
    out = self.backbone.apply({'params': teacher_backbone}, x, train=False, method=ViT.encode)
    h = out['patches'].astype(jnp.float32)
    mu = jnp.mean(h, axis=-1, keepdims=True)
    h = (h - mu) * jax.lax.rsqrt(jnp.var(h, axis=-1, keepdims=True) + 1e-5)
    return jax.vmap(lambda hb, ib: hb[ib])(h, target_ids)

  def predict(self, params, x, context_ids, target_ids, *, train=False, rng=None):
    """(B, M, Kt, D) predictions: the context encoder on the context patches, then the predictor
    once per target block."""
    enc = self.backbone.apply({'params': params['backbone']}, x, train=train, ids_keep=context_ids,
                              method=ViT.encode, rngs={'dropout': rng} if train else None)
    b, m, kt = target_ids.shape
    ctx = jnp.repeat(enc['patches'], m, axis=0)                 # (B * M, Kc, D), image-major
    ctx_ids = jnp.repeat(context_ids, m, axis=0)
    pred = self.predictor.apply({'params': params['predictor']}, ctx, ctx_ids,
                                target_ids.reshape(b * m, kt))
    return pred.reshape(b, m, kt, -1)

  def loss(self, params, state, views, rng):
    x = views['view0']
    target_encoder = jax.lax.stop_gradient(state.buffers['teacher']['params']['backbone'])
    target = jax.lax.stop_gradient(self.targets(target_encoder, x, views['target_ids']))
    pred = self.predict(params, x, views['context_ids'], views['target_ids'], train=True, rng=rng)
    loss = losses.ijepa_loss(pred, target, self.hp.loss)

    def token_std(y):
      y = y.reshape(-1, y.shape[-1])
      return jnp.mean(jnp.std(y, axis=0, ddof=1))

    metrics = {'target_std': token_std(target), 'pred_std': token_std(jax.lax.stop_gradient(pred)),
               'ema_momentum': self.momentum_fn(state.step),
               'context_tokens': jnp.asarray(self.num_context_tokens, jnp.float32),
               'target_tokens': jnp.asarray(self.num_target_tokens, jnp.float32)}
    return loss, (metrics, state.buffers)

  def after_update(self, state):
    return teacher.update(state, self.momentum_fn)   # the momentum of the update just made

  def build_optimizer(self, total_steps: int):
    """AdamW (or SGD) with I-JEPA's schedules: lr warm-up from ``warmup_start_lr_ratio`` x peak,
    cosine to ``optim.min_lr_ratio`` x peak; weight decay cosine from ``optim.weight_decay`` to
    ``weight_decay_end``; global-norm clipping only if ``optim.clip_grad_norm`` > 0 (I-JEPA: none).
    LARS falls back to the shared optimiser."""
    o, m = self.config.optim, self.hp
    if o.name not in ('adamw', 'sgd'):
      return schedules.build_optimizer(o, self.config.data.batch_size, total_steps)
    peak = schedules.scaled_lr(o, self.config.data.batch_size)
    warm = min(o.warmup_steps, max(total_steps - 1, 0))
    lr = optax.warmup_cosine_decay_schedule(peak * m.warmup_start_lr_ratio, peak, warm,
                                            max(total_steps, 1), peak * o.min_lr_ratio)
    wd_end = o.weight_decay if m.weight_decay_end is None else m.weight_decay_end
    wd = schedules.cosine_increase(o.weight_decay, wd_end, total_steps)
    if o.name == 'adamw':
      tx = optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=wd, mask=schedules.decay_mask)
    else:
      tx = optax.chain(optax.add_decayed_weights(wd, mask=schedules.decay_mask),
                       optax.sgd(lr, momentum=o.momentum))
    if o.clip_grad_norm > 0:
      tx = optax.chain(optax.clip_by_global_norm(o.clip_grad_norm), tx)
    return tx, lr

  def features(self, params, buffers, images_uint8):
    """Pooled features of the *target* encoder in eval mode (what I-JEPA evaluates): the mean of
    its last layer's patch tokens with ``model.pool='mean'``."""
    x = self.normalize(images_uint8)
    out = self.backbone.apply({'params': buffers['teacher']['params']['backbone']}, x, train=False)
    return out.astype(jnp.float32)

  def encoder_variables(self, params, buffers):
    """The target encoder's variables (I-JEPA releases the target encoder)."""
    return {'params': buffers['teacher']['params']['backbone']}
