"""MoCo v1/v2 and MoCo v3.

* **MoCo v1** (He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
  CVPR 2020) and **v2** (Chen et al., "Improved Baselines with Momentum Contrastive Learning",
  2020): class ``MoCo``. A query encoder (backbone -> projector) and a momentum key encoder (its
  EMA, Eq. 2: theta_k <- m theta_k + (1 - m) theta_q, constant m = 0.999) in
  ``buffers['teacher']`` (``methods/teacher.py``); a FIFO queue of K L2-normalised keys of earlier batches
  (``buffers['queue']`` (K, D), ``buffers['queue_ptr']``) gives the negatives of the InfoNCE loss
  (Eq. 1, ``losses.info_nce_queue``). The current keys are enqueued inside the jitted step after
  the loss has used the old queue (``common.enqueue``), oldest batch overwritten; K must be a
  multiple of the global batch. Queue and key encoder are train state, so they are checkpointed.
  As in the reference, the loss is asymmetric: queries from view 0, keys from view 1.

  v1 vs v2 is configuration (``configs/moco.py``): v1 has a linear projector to 128-d
  (``proj_layers=1``), tau 0.07, the InstDis augmentation (``aug.recipe='mocov1'``) and a step
  learning-rate schedule (``method.lr_schedule='step'``: x0.1 at 60% and 80% of training, the
  paper's epochs 120/160 of 200); v2 adds the 2-layer MLP projector without BN (2048-ReLU-128),
  tau 0.2, the stronger recipe with blur (``'mocov2'``) and a cosine schedule.

  Shuffling BN (MoCo Sec. 3.3) is unnecessary here. It exists because per-GPU BatchNorm lets the
  queries of a sub-batch "see" the statistics of that same small sub-batch, leaking which key is
  the positive. Under ``jax.jit`` with the batch sharded over the mesh, BatchNorm statistics are
  computed over the whole global batch (sync BN), and queries and keys are normalised in separate
  calls with separate statistics, so there is no per-device sub-batch to leak through; the result
  is the same on 1 and on N devices (tested).

* **MoCo v3** (Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision
  Transformers", ICCV 2021): class ``MoCoV3``. No queue: the negatives are the other keys of the
  global batch; a predictor on the query branch; the symmetric loss
  ``ctr(q1, k2) + ctr(q2, k1)`` with each term scaled by 2 tau as in the official code
  (``losses.moco_v3_symmetric``); momentum 0.99 -> 1 on a cosine schedule; heads with BN (the
  projector's last BN without affine). With a ViT backbone, ``model.frozen_patch_embed=True``
  gives the paper's random, frozen patch projection (Sec. 4.2): the ViT stops the gradient at the
  patch embedding and ``build_optimizer`` maps those parameters to ``optax.set_to_zero`` so that
  weight decay cannot move them either; ``model.pos_embed='sincos'`` uses the fixed 2-D sin-cos
  position embedding of the paper. Both are backbone fields (``configs/mocov3.py:*_vit``), so
  fine-tuning and export build the same ViT.

Both keep the key encoder's BatchNorm in training mode with its own running statistics (see
``siamese.py``).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from ssl_jax import losses
from ssl_jax.methods import common
from ssl_jax.methods import teacher
from ssl_jax.methods.contrastive.siamese import SiameseMethod, random_unit_rows
from ssl_jax import optim as schedules


class MoCo(SiameseMethod):
  """MoCo v1/v2: momentum key encoder + queue of negatives."""

  use_target = True
  use_predictor = False

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(SiameseMethod.Hparams, teacher.EMAHparams):
    temperature: float
    queue_size: int
    lr_schedule: str = 'cosine'   # 'cosine' | 'step' (MoCo v1, SGD)
    version: int = 2              # documentation only: v1 / v2 differ by the fields above

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.temperature = m.temperature
    self.queue_size = m.queue_size
    if self.queue_size % config.data.batch_size:
      raise ValueError(f'config.method.queue_size={self.queue_size} must be a multiple of '
                       f'config.data.batch_size={config.data.batch_size} (MoCo enqueues whole '
                       'global batches)')

  def init_extra(self, rng):
    return {'queue': random_unit_rows(rng, self.queue_size, self.hp.proj_dim),
            'queue_ptr': jnp.zeros((), jnp.int32)}

  def keys(self, target, x, rng):
    """(normalised keys (N, D), new target buffers) of images ``x`` by the key encoder."""
    k, target = self.target(target, x, rng)
    return losses.l2_normalize(k), target

  def loss(self, params, state, views, rng):
    k_q, k_k = jax.random.split(rng)
    q, _, stats = self.online(params, state.buffers['batch_stats'], views['view0'], k_q)
    k, target = self.keys(state.buffers['teacher'], views['view1'], k_k)
    queue = state.buffers['queue']
    loss, acc = losses.info_nce_queue(q, k, queue, self.temperature)
    queue, ptr = common.enqueue(queue, state.buffers['queue_ptr'], k)
    buffers = dict(state.buffers, batch_stats=stats, teacher=target, queue=queue, queue_ptr=ptr)
    return loss, ({'contrastive_acc': acc}, buffers)

  def build_optimizer(self, total_steps: int):
    """MoCo v1's step schedule (``method.lr_schedule='step'``, SGD): lr x0.1 at 60% and 80% of
    training; otherwise the configured optimizer with warmup + cosine."""
    o = self.config.optim
    if self.hp.lr_schedule != 'step':
      return super().build_optimizer(total_steps)
    if o.name != 'sgd':
      raise ValueError("config.method.lr_schedule='step' needs config.optim.name='sgd'")
    peak = schedules.scaled_lr(o, self.config.data.batch_size)
    lr = optax.piecewise_constant_schedule(
        peak, {int(0.6 * total_steps): 0.1, int(0.8 * total_steps): 0.1})
    tx = optax.chain(optax.add_decayed_weights(o.weight_decay, mask=schedules.decay_mask),
                     optax.sgd(lr, momentum=o.momentum))
    return tx, lr


class MoCoV3(SiameseMethod):
  """MoCo v3: symmetric in-batch contrastive loss, predictor, momentum encoder, no queue."""

  use_target = True
  use_predictor = True
  momentum_step_offset = 1

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(SiameseMethod.Hparams, common.PredictorHparams, teacher.EMAHparams):
    temperature: float

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    self.temperature = m.temperature

  def loss(self, params, state, views, rng):
    k1, k2, k3, k4 = jax.random.split(rng, 4)
    stats = state.buffers['batch_stats']
    _, q1, stats = self.online(params, stats, views['view0'], k1)
    _, q2, stats = self.online(params, stats, views['view1'], k2)
    t1, target = self.target(state.buffers['teacher'], views['view0'], k3)
    t2, target = self.target(target, views['view1'], k4)
    loss, acc = losses.moco_v3_symmetric(q1, q2, t1, t2, self.temperature)
    return loss, ({'contrastive_acc': acc},
                  dict(state.buffers, batch_stats=stats, teacher=target))

  def param_label(self, path: str) -> str:
    if self.config.model.get('frozen_patch_embed', False) and path.startswith(
        "['backbone']['patch_embed']"):
      return 'frozen'
    return 'train'
