"""DINO (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021).

Self-distillation with no labels. A student (backbone + ``DINOHead``) is trained to match the
output distribution of an EMA teacher of itself:

* multi-crop: 2 global crops (``data.image_size``) go to teacher and student, ``num_local_crops``
  local crops (``local_crop_size``, smaller) to the student only; the ViT resamples its position
  embedding for the local grid. Crops of one resolution share one backbone call.
* loss (``losses.dino_loss``): cross-entropy between the teacher's centred, sharpened softmax of
  global crop q and the student's softmax of every crop v != q (Algorithm 1).
* center (``buffers['center']``): the loss uses the *old* center; the new one
  ``m c + (1 - m) mean(teacher logits)`` (momentum 0.9, mean over the global batch and both global
  crops) is returned by ``loss`` as a new buffer, i.e. updated after the loss, as Algorithm 1.
* teacher (``buffers['teacher']``, the layout of ``methods/teacher.py``): EMA of the student
  backbone and head with the cosine momentum schedule 0.996 -> 1 (``teacher.momentum_schedule``),
  updated in ``after_update``; its BatchNorm statistics (ResNet, ``use_bn_in_head``) are its own.
* schedules: teacher temperature linear warm-up (``warmup_teacher_temp`` -> ``teacher_temp`` over
  ``warmup_teacher_temp_steps``), lr warm-up + cosine, weight decay cosine from
  ``optim.weight_decay`` (0.04) to ``method.weight_decay_end`` (0.4).
* optimiser (``build_optimizer``): DINO's per-parameter-tensor gradient clipping at
  ``optim.clip_grad_norm`` (the official ``clip_gradients``), AdamW with the scheduled weight
  decay (no decay on biases, norms, tokens), and the head's last layer frozen (zero update, no
  decay) for the first ``freeze_last_layer_steps`` updates. The Adam moments of the frozen layer
  keep accumulating, so its first unfrozen updates are well scaled (PyTorch skips it instead).

Evaluation (``features``) and export (``encoder_variables``) use the *teacher* backbone, which is
what DINO evaluates and releases (it is consistently better than the student).

Metrics: ``teacher_entropy`` (mean per-image entropy of the teacher's centred, sharpened output;
collapse sends it to 0 or to log K), ``teacher_marginal_entropy`` (entropy of its batch mean),
``teacher_temp``.

Config (``config.method``): out_dim, hidden_dim, bottleneck_dim, num_layers, norm_last_layer,
student_temp, teacher_temp, warmup_teacher_temp, warmup_teacher_temp_steps, center_momentum,
momentum, momentum_final, num_local_crops, local_crop_size, global_crop_scale, local_crop_scale,
weight_decay_end, freeze_last_layer_steps, use_bn_in_head (optional, default False).
``config.aug.recipe``: a 3-tuple of recipe names (global crop 1, global crop 2, local crops).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from ssl_jax import losses
from ssl_jax.data import augment
from ssl_jax.data.pipeline import CropSpec
from ssl_jax.methods import teacher as teacher_lib
from ssl_jax.methods.base import Method, apply_module, init_module
from ssl_jax.models.heads import DINOHead
from ssl_jax import optim as schedules

DEFAULT_RECIPES = ('dino_global1', 'dino_global2', 'dino_local')


def clip_by_leaf_norm(max_norm: float) -> optax.GradientTransformation:
  """Clips every parameter tensor's gradient to L2 norm ``max_norm`` separately (DINO's
  ``utils.clip_gradients``: g <- g * max_norm / (||g|| + 1e-6) when that factor is < 1)."""
  def clip(g):
    coef = max_norm / (jnp.linalg.norm(g.reshape(-1)) + 1e-6)
    return jnp.where(coef < 1.0, g * coef, g)
  return optax.stateless(lambda updates, params: jax.tree_util.tree_map(clip, updates))


def zero_updates_until(num_steps: int, mask_fn) -> optax.GradientTransformation:
  """Zeroes the updates of the leaves where ``mask_fn(updates)`` is True for the first
  ``num_steps`` updates (DINO's ``cancel_gradients_last_layer`` for the first epoch)."""
  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params
    live = state.count >= num_steps
    updates = jax.tree_util.tree_map(
        lambda u, frozen: jnp.where(live, u, jnp.zeros_like(u)) if frozen else u,
        updates, mask_fn(updates))
    return updates, optax.ScaleByScheduleState(count=optax.safe_int32_increment(state.count))
  return optax.GradientTransformation(init, update)


def last_layer_mask(tree):
  """True for the head's weight-normed last layer(s) (``head/last_layer*``)."""
  def is_last(path, _):
    keys = [getattr(k, 'key', None) for k in path]
    return 'head' in keys and any(str(k).startswith('last_layer') for k in keys)
  return jax.tree_util.tree_map_with_path(is_last, tree)


class DINO(Method):
  """DINO: multi-crop self-distillation with centering and sharpening."""

  #: params subtrees that have an EMA copy in ``buffers['teacher']``.
  teacher_keys = ('backbone', 'head')

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams, teacher_lib.EMAHparams):
    out_dim: int
    hidden_dim: int
    bottleneck_dim: int
    num_layers: int
    norm_last_layer: bool
    use_bn_in_head: bool = False
    global_crop_scale: tuple[float, float]
    num_local_crops: int
    local_crop_size: int
    local_crop_scale: tuple[float, float]
    student_temp: float
    teacher_temp: float
    warmup_teacher_temp: float
    warmup_teacher_temp_steps: int
    center_momentum: float
    weight_decay_end: float | None = None   # None: optim.weight_decay throughout
    freeze_last_layer_steps: int = 0

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.num_local = m.num_local_crops
    self.head = self._make_head()
    total = config.train.steps
    self.momentum_fn = teacher_lib.momentum_schedule(m, total)
    self.teacher_temp_fn = schedules.linear_warmup_constant(
        m.warmup_teacher_temp, m.teacher_temp, m.warmup_teacher_temp_steps)

  def _make_head(self, **extra):
    """The DINO head from ``config.method``; ``extra`` DINOHead fields (iBOT's patch head)."""
    m = self.hp
    return DINOHead(out_dim=m.out_dim, hidden_dim=m.hidden_dim, bottleneck_dim=m.bottleneck_dim,
                    num_layers=m.num_layers, norm_last_layer=m.norm_last_layer,
                    use_bn=m.use_bn_in_head, **extra)

  # -- data -------------------------------------------------------------------------------------
  def crop_specs(self):
    d, m = self.config.data, self.hp
    specs = [CropSpec(f'global{i}', d.image_size, tuple(m.global_crop_scale), flip=d.flip)
             for i in range(2)]
    specs += [CropSpec(f'local{i}', m.local_crop_size, tuple(m.local_crop_scale), flip=d.flip)
              for i in range(self.num_local)]
    return tuple(specs)

  def _recipes(self):
    recipe = self.config.aug.recipe
    names = DEFAULT_RECIPES if recipe in ('dino', None) else recipe
    if isinstance(names, str) or len(names) != 3:
      raise ValueError(f'config.aug.recipe={recipe!r}: DINO needs 3 recipe names (global crop 1, '
                       'global crop 2, local crops) or "dino"')
    over = dict(self.config.aug.get('overrides', {}))
    return tuple(augment.get_recipe(n, **over) for n in names)

  def views(self, batch, rng):
    g1, g2, loc = self._recipes()
    keys = jax.random.split(rng, 2 + self.num_local)
    out = {'global0': augment.augment_batch(keys[0], batch['global0'], g1),
           'global1': augment.augment_batch(keys[1], batch['global1'], g2)}
    for i in range(self.num_local):
      out[f'local{i}'] = augment.augment_batch(keys[2 + i], batch[f'local{i}'], loc)
    return out

  # -- state ------------------------------------------------------------------------------------
  def init(self, rng, batch):
    k1, k2 = jax.random.split(rng)
    x = jnp.zeros((2,) + batch['global0'].shape[1:], jnp.float32)
    bb_params, bb_stats = init_module(self.backbone, k1, x)
    hd_params, hd_stats = init_module(self.head, k2,
                                      jnp.zeros((2, self.feature_dim), jnp.float32))
    params = {'backbone': bb_params, 'head': hd_params}
    return params, self._buffers(params, bb_stats, hd_stats)

  def _buffers(self, params, bb_stats, hd_stats=None):
    """Teacher = a copy of the student; centers start at 0 (as the official code). BatchNorm
    statistics (ResNet backbone, ``use_bn_in_head``) are kept apart for student
    (``buffers['batch_stats']``) and teacher (``buffers['teacher']['batch_stats']``)."""
    stats = {k: v for k, v in (('backbone', bb_stats), ('head', hd_stats)) if v}
    buffers = {'teacher': teacher_lib.from_student(params, self.teacher_keys, stats),
               'center': jnp.zeros((1, self.hp.out_dim), jnp.float32)}
    if stats:
      buffers['batch_stats'] = stats
    return buffers

  # -- forward pieces ---------------------------------------------------------------------------
  def _stats(self, buffers, name):
    """The student's BatchNorm statistics of module ``name`` ({} when it has none)."""
    return buffers.get('batch_stats', {}).get(name, {})

  def _student_features(self, params, buffers, views, rng):
    """Pooled student features of every crop, (V * B, D) in crop order, and new BN stats."""
    stats = self._stats(buffers, 'backbone')
    k_g, k_l = jax.random.split(rng)
    groups = [(jnp.concatenate([views['global0'], views['global1']]), k_g)]
    if self.num_local:
      groups.append((jnp.concatenate([views[f'local{i}'] for i in range(self.num_local)]), k_l))
    feats = []
    for x, key in groups:
      f, stats = apply_module(self.backbone, params['backbone'], stats, x, train=True,
                              rngs={'dropout': key})
      feats.append(f)
    return jnp.concatenate(feats), stats

  def _head_apply(self, head_params, stats, x):
    """The head in train mode, threading its BatchNorm statistics ``stats`` when it has any
    (the teacher's head too runs in train mode, as DINO's teacher). Returns (logits, stats)."""
    return apply_module(self.head, head_params, stats, x, train=True)

  def _teacher_apply(self, buffers, x, **kw):
    """Teacher backbone forward, no gradient. A BatchNorm teacher (ResNet) runs in train mode
    with its own running statistics, as DINO's teacher (SyncBN, train mode); a ViT teacher runs
    without stochastic depth."""
    stats = teacher_lib.stats_of(buffers['teacher'], 'backbone')
    teacher = jax.lax.stop_gradient(buffers['teacher']['params'])
    out, stats = apply_module(self.backbone, teacher['backbone'], stats, x, train=bool(stats), **kw)
    return jax.lax.stop_gradient(out), stats

  def _new_stats(self, buffers, student_stats, teacher_stats, head_stats=None):
    """The ``batch_stats`` and ``teacher`` buffers with the new statistics; ``head_stats`` is the
    (student, teacher) pair of head statistics."""
    if 'batch_stats' not in buffers:
      return {}
    new, new_teacher = dict(buffers['batch_stats']), {}
    if student_stats:
      new['backbone'], new_teacher['backbone'] = student_stats, teacher_stats
    if head_stats is not None and 'head' in new:
      new['head'], new_teacher['head'] = head_stats
    return {'batch_stats': new,
            'teacher': teacher_lib.with_stats(buffers['teacher'], **new_teacher)}

  # -- training ---------------------------------------------------------------------------------
  def loss(self, params, state, views, rng):
    m = self.hp
    buffers = state.buffers
    b = views['global0'].shape[0]
    n_crops = 2 + self.num_local
    feats, s_stats = self._student_features(params, buffers, views, rng)
    student, sh_stats = self._head_apply(params['head'], self._stats(buffers, 'head'), feats)
    student = student.reshape(n_crops, b, -1)

    t_feats, t_stats = self._teacher_apply(
        buffers, jnp.concatenate([views['global0'], views['global1']]))
    teacher, th_stats = self._head_apply(
        jax.lax.stop_gradient(buffers['teacher']['params']['head']),
        teacher_lib.stats_of(buffers['teacher'], 'head'), t_feats)
    teacher = jax.lax.stop_gradient(teacher.reshape(2, b, -1))

    temp = self.teacher_temp_fn(state.step)
    center = buffers['center']
    loss = losses.dino_loss(student, teacher, center, m.student_temp, temp)
    ent, marginal = losses.softmax_entropy(teacher, temp, center)
    new_buffers = dict(buffers, center=losses.ema_center(center, teacher, m.center_momentum),
                       **self._new_stats(buffers, s_stats, t_stats, (sh_stats, th_stats)))
    metrics = {'teacher_entropy': ent, 'teacher_marginal_entropy': marginal, 'teacher_temp': temp}
    return loss, (metrics, new_buffers)

  def after_update(self, state):
    return teacher_lib.update(state, self.momentum_fn)

  def build_optimizer(self, total_steps: int):
    """AdamW (or SGD) with DINO's weight-decay schedule, per-tensor clipping and the frozen last
    layer; LARS falls back to the shared optimiser (constant weight decay)."""
    o, m = self.config.optim, self.hp
    peak = schedules.scaled_lr(o, self.config.data.batch_size)
    lr = schedules.warmup_cosine(peak, o.warmup_steps, total_steps, peak * o.min_lr_ratio)
    wd_end = o.weight_decay if m.weight_decay_end is None else m.weight_decay_end
    wd = schedules.cosine_increase(o.weight_decay, wd_end, total_steps)
    if o.name == 'adamw':
      tx = optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=wd, mask=schedules.decay_mask)
    elif o.name == 'sgd':
      tx = optax.chain(optax.add_decayed_weights(wd, mask=schedules.decay_mask),
                       optax.sgd(lr, momentum=o.momentum))
    else:  # LARS: the shared optimiser, with its global-norm clipping
      tx, lr = schedules.build_optimizer(o, self.config.data.batch_size, total_steps)
    parts = []
    if o.clip_grad_norm > 0 and o.name in ('adamw', 'sgd'):
      parts.append(clip_by_leaf_norm(o.clip_grad_norm))
    parts.append(tx)
    if m.freeze_last_layer_steps > 0:
      parts.append(zero_updates_until(m.freeze_last_layer_steps, last_layer_mask))
    return optax.chain(*parts), lr

  # -- evaluation / export ----------------------------------------------------------------------
  def features(self, params, buffers, images_uint8):
    """Pooled features of the *teacher* backbone in eval mode (what DINO evaluates)."""
    x = self.normalize(images_uint8)
    out, _ = apply_module(self.backbone, buffers['teacher']['params']['backbone'],
                          teacher_lib.stats_of(buffers['teacher'], 'backbone'), x, train=False)
    return out.astype(jnp.float32)

  def encoder_variables(self, params, buffers):
    """The teacher backbone's variables (DINO releases the teacher)."""
    v = {'params': buffers['teacher']['params']['backbone']}
    stats = teacher_lib.stats_of(buffers['teacher'], 'backbone')
    if stats:
      v['batch_stats'] = stats
    return v
