"""MSN (Assran et al., "Masked Siamese Networks for Label-Efficient Learning", ECCV 2022) and
PMSN (Mo et al. 2023, MSN with a power-law prior on the prototypes' usage).

* views (official ``make_transforms``): per image one *target* crop and one *anchor* crop of
  ``data.image_size`` (scale ``rand_crop_scale``) and ``num_focal_crops`` focal anchor crops of
  ``focal_crop_size`` (scale ``focal_crop_scale``).
* masking: every anchor view drops a random ``mask_ratio`` of its patches (the official
  ``patch_drop``: 0.15 ViT-S/16, 0.3 ViT-B/16, 0.7 ViT-L/7); the ViT encodes the kept patches
  only (``ids_keep``). The target view is not masked.
* anchors: student backbone (pooled token) -> projector MLP (``proj_*``, BatchNorm over all the
  anchors at once). Target: the EMA target encoder (backbone + projector, train-mode BatchNorm of
  its own, as the official target), no gradient.
* loss (``losses.msn_loss``): cross-entropy between the sharpened target prediction (softmax
  over the L2-normalised learnable ``prototypes`` at 0.1, sharpened with T = 0.25, i.e. at
  0.025) and every anchor's prediction at 0.1, plus ``reg_weight`` times the mean-entropy
  maximisation (``prior='uniform'``) or PMSN's KL to the power law k^-``power_law_exponent``
  (``prior='power_law'``), over the global batch.
* target encoder (``buffers['teacher']``, the layout of ``methods/teacher.py``): EMA of backbone
  and projector, 0.996 -> 1 on the shared cosine schedule (``teacher.momentum_schedule``; the
  official schedule is linear over 1.25 x the run, nearly the same curve at the start), updated in
  ``after_update``; the projector's BatchNorm statistics of the target are its own.
* optimiser: AdamW, lr warm-up + cosine, weight decay cosine 0.04 -> ``weight_decay_end`` (0.4);
  no weight decay on the prototypes, biases and norms (the official param groups); global-norm
  clipping at ``optim.clip_grad_norm`` (3.0).

Differences from the official code: the projector's activations are ReLU (``models.heads.MLP``;
the official uses GELU), and the target sharpening temperature is constant (the official config
keeps start = final = 0.25 too).

Evaluation (``features``) and export use the *target* backbone (what MSN evaluates and releases).

Metrics: ``cross_entropy``, ``regularizer``, ``anchor_entropy``, ``target_max`` (mean largest
target probability: 1 = one-hot targets) and ``prototypes_used`` (distinct argmax of the targets
in the batch, as the official log's ``np``).

Config (``config.method``): num_prototypes, temperature, sharpen_temperature, reg_weight, prior,
power_law_exponent, entropy_weight, sinkhorn_iterations, mask_ratio, num_focal_crops,
focal_crop_size, rand_crop_scale, focal_crop_scale, weight_decay_end, momentum, momentum_final,
proj_layers, proj_hidden_dim, proj_dim, proj_bn. ``config.aug.recipe``: one name for every view.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from ssl_jax import losses
from ssl_jax import optim as schedules
from ssl_jax.data import augment, masking
from ssl_jax.data.pipeline import CropSpec
from ssl_jax.methods import common
from ssl_jax.methods import teacher as teacher_lib
from ssl_jax.methods.base import Method, apply_module, init_module

PRIORS = ('uniform', 'power_law')


def no_decay_on_prototypes(params):
  """``optim.decay_mask`` with the prototypes excluded (the official ``WD_exclude`` group)."""
  mask = schedules.decay_mask(params)
  return dict(mask, prototypes=False) if 'prototypes' in mask else mask


class MSN(Method):
  """MSN / PMSN: masked anchors match the EMA target's sharpened prototype assignment."""

  teacher_keys = ('backbone', 'head')

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams, teacher_lib.EMAHparams, common.ProjectorHparams):
    num_prototypes: int = 1024
    temperature: float = 0.1
    sharpen_temperature: float = 0.25
    reg_weight: float = 1.0
    prior: str = 'uniform'
    power_law_exponent: float = 0.25
    entropy_weight: float = 0.0
    sinkhorn_iterations: int = 0
    mask_ratio: float = 0.15
    num_focal_crops: int = 10
    focal_crop_size: int = 96
    rand_crop_scale: tuple[float, float] = (0.3, 1.0)
    focal_crop_scale: tuple[float, float] = (0.05, 0.3)
    weight_decay_end: float | None = None

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    if m.prior not in PRIORS:
      raise ValueError(f'config.method.prior={m.prior!r} must be one of {PRIORS} '
                       "('power_law' = PMSN)")
    if not hasattr(self.backbone, 'encode'):
      raise ValueError(f'config.model.backbone={config.model.backbone!r}: MSN masks patches of '
                       'its anchors and needs a ViT backbone (e.g. vit_small)')
    masking.num_kept(1, m.mask_ratio)   # checks 0 <= mask_ratio < 1
    self.head = common.mlp_from_config(m, 'proj')
    if self.head is None:
      raise ValueError('config.method.proj_layers=0: MSN needs a projector (e.g. 3)')
    self.prior = (None if m.prior == 'uniform'
                  else losses.power_law_prior(m.num_prototypes, m.power_law_exponent))
    self.momentum_fn = teacher_lib.momentum_schedule(m, config.train.steps)
    self.patch = config.model.patch_size

  # -- data -------------------------------------------------------------------------------------
  def crop_specs(self):
    d, m = self.config.data, self.hp
    specs = [CropSpec(n, d.image_size, tuple(m.rand_crop_scale), flip=d.flip)
             for n in ('target', 'anchor')]
    specs += [CropSpec(f'focal{i}', m.focal_crop_size, tuple(m.focal_crop_scale), flip=d.flip)
              for i in range(m.num_focal_crops)]
    return tuple(specs)

  def _num_patches(self, size: int) -> int:
    return (size // self.patch) ** 2

  def views(self, batch, rng):
    """Colour-augmented crops and, per anchor image, the patches it keeps (``*_keep``)."""
    m = self.hp
    recipe = self.view_recipes()[0]
    names = ['target', 'anchor'] + [f'focal{i}' for i in range(m.num_focal_crops)]
    keys = jax.random.split(rng, len(names) + 2)
    out = {n: augment.augment_batch(k, batch[n], recipe) for n, k in zip(names, keys)}
    b = batch['anchor'].shape[0]
    out['anchor_keep'] = masking.random_masking(
        keys[-2], b, self._num_patches(self.config.data.image_size), m.mask_ratio)['ids_keep']
    if m.num_focal_crops:
      out['focal_keep'] = masking.random_masking(
          keys[-1], b * m.num_focal_crops, self._num_patches(m.focal_crop_size),
          m.mask_ratio)['ids_keep']
    return out

  def view_recipes(self):
    recipe = self.config.aug.recipe
    if not isinstance(recipe, str):
      raise ValueError(f'config.aug.recipe={recipe!r}: MSN takes one recipe name for all views')
    return (augment.get_recipe(recipe, **dict(self.config.aug.get('overrides', {}))),)

  # -- state ------------------------------------------------------------------------------------
  def init(self, rng, batch):
    m = self.hp
    k1, k2, k3 = jax.random.split(rng, 3)
    x = jnp.zeros((2,) + batch['anchor'].shape[1:], jnp.float32)
    bb_params, _ = init_module(self.backbone, k1, x)
    hd_params, hd_stats = init_module(self.head, k2, jnp.zeros((2, self.feature_dim), jnp.float32))
    # Official init: uniform(-1/sqrt(d), 1/sqrt(d)).
    bound = m.proj_dim ** -0.5
    protos = jax.random.uniform(k3, (m.num_prototypes, m.proj_dim), jnp.float32, -bound, bound)
    params = {'backbone': bb_params, 'head': hd_params, 'prototypes': protos}
    buffers = {'teacher': teacher_lib.from_student(params, self.teacher_keys, {'head': hd_stats})}
    if hd_stats:
      buffers['batch_stats'] = {'head': hd_stats}
    return params, buffers

  # -- forward pieces ---------------------------------------------------------------------------
  def _pooled(self, bb_params, x, *, train, rng=None, ids_keep=None):
    """The backbone's pooled feature of the (kept) patches: its pooling token, or the mean."""
    out = self.backbone.apply({'params': bb_params}, x, train=train, ids_keep=ids_keep,
                              rngs={'dropout': rng} if rng is not None else None,
                              method=type(self.backbone).encode)
    bb = self.backbone
    if bb.pool == 'mean' or bb.num_prefix_tokens == 0:
      return out['patches'].mean(axis=1)
    return out['tokens'][:, bb.pool_token]

  def _stats(self, buffers, name):
    return buffers.get('batch_stats', {}).get(name, {})

  def anchor_embeddings(self, params, buffers, views, rng):
    """(V * B, d) projections of the masked anchors (anchor crop first, then the focal crops,
    view-major) and the student head's new BatchNorm statistics."""
    m = self.hp
    k1, k2 = jax.random.split(rng)
    feats = [self._pooled(params['backbone'], views['anchor'], train=True, rng=k1,
                          ids_keep=views['anchor_keep'])]
    if m.num_focal_crops:
      focal = jnp.concatenate([views[f'focal{i}'] for i in range(m.num_focal_crops)])
      feats.append(self._pooled(params['backbone'], focal, train=True, rng=k2,
                                ids_keep=views['focal_keep']))
    return apply_module(self.head, params['head'], self._stats(buffers, 'head'),
                        jnp.concatenate(feats), train=True)

  def target_embeddings(self, buffers, views):
    """(B, d) projections of the unmasked target crop by the EMA target encoder, no gradient."""
    teacher = jax.lax.stop_gradient(buffers['teacher']['params'])
    h = self._pooled(teacher['backbone'], views['target'], train=False)
    z, stats = apply_module(self.head, teacher['head'],
                            teacher_lib.stats_of(buffers['teacher'], 'head'), h, train=True)
    return jax.lax.stop_gradient(z), stats

  # -- training ---------------------------------------------------------------------------------
  def loss(self, params, state, views, rng):
    m = self.hp
    buffers = state.buffers
    anchors, s_stats = self.anchor_embeddings(params, buffers, views, rng)
    targets, t_stats = self.target_embeddings(buffers, views)
    loss, aux = losses.msn_loss(
        anchors, targets, params['prototypes'], temperature=m.temperature,
        sharpen_temperature=m.sharpen_temperature, reg_weight=m.reg_weight, prior=self.prior,
        entropy_weight=m.entropy_weight, sinkhorn_iterations=m.sinkhorn_iterations)
    t_probs = losses.prototype_probabilities(targets, params['prototypes'], m.temperature)
    used = jnp.zeros((m.num_prototypes,), jnp.float32).at[jnp.argmax(t_probs, -1)].set(1.0)
    new_buffers = dict(buffers)
    if 'batch_stats' in buffers:
      new_buffers['batch_stats'] = {'head': s_stats}
      new_buffers['teacher'] = teacher_lib.with_stats(buffers['teacher'], head=t_stats)
    return loss, (dict(aux, prototypes_used=jnp.sum(used)), new_buffers)

  def after_update(self, state):
    return teacher_lib.update(state, self.momentum_fn)

  def build_optimizer(self, total_steps: int):
    """AdamW (or SGD) with the cosine weight-decay schedule and no decay on the prototypes;
    LARS is refused (the official code excludes the prototypes from LARS too)."""
    o, m = self.config.optim, self.hp
    peak = schedules.scaled_lr(o, self.config.data.batch_size)
    lr = schedules.warmup_cosine(peak, o.warmup_steps, total_steps, peak * o.min_lr_ratio)
    wd_end = o.weight_decay if m.weight_decay_end is None else m.weight_decay_end
    wd = schedules.cosine_increase(o.weight_decay, wd_end, total_steps)
    if o.name == 'adamw':
      tx = optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=wd, mask=no_decay_on_prototypes)
    elif o.name == 'sgd':
      tx = optax.chain(optax.add_decayed_weights(wd, mask=no_decay_on_prototypes),
                       optax.sgd(lr, momentum=o.momentum))
    else:
      raise ValueError(f"config.optim.name={o.name!r}: MSN trains with 'adamw' (or 'sgd')")
    if o.clip_grad_norm > 0:
      tx = optax.chain(optax.clip_by_global_norm(o.clip_grad_norm), tx)
    return tx, lr

  # -- evaluation / export ----------------------------------------------------------------------
  def features(self, params, buffers, images_uint8):
    """Pooled features of the *target* backbone in eval mode (what MSN evaluates)."""
    x = self.normalize(images_uint8)
    return self.backbone.apply({'params': buffers['teacher']['params']['backbone']},
                               x).astype(jnp.float32)

  def encoder_variables(self, params, buffers):
    """The target backbone's variables (MSN releases the target encoder)."""
    return {'params': buffers['teacher']['params']['backbone']}
