r"""data2vec for speech (Baevski et al., "data2vec: A General Framework for Self-supervised
Learning in Speech, Vision and Language", ICML 2022, Sec. 3-4.2).

The student encodes the waveform with spans of its 20 ms frames masked (the projected conv
features replaced by a learned mask embedding before the positional convolution); an EMA
teacher encodes the *unmasked* frames, and at every masked frame a linear head on the student's
output regresses

.. math:: y_t = \frac{1}{K} \sum_{l = L - K + 1}^{L} \mathrm{IN}(a_t^l),
          \qquad L = \frac{1}{|M|}\sum_{t \in M} \tfrac{1}{\sqrt{D}} \lVert f_t - y_t \rVert^2

with :math:`a^l` the output of block l's feed-forward network *before* its residual connection
(fairseq's ``layer_results``, the audio model's targets; ``AudioEncoder.encode(...)['ffn']``), IN
the parameter-free instance norm of each channel over the frames of an utterance, K = ``top_k``
(8 of 12), and the (smooth-)L2 loss of ``losses.data2vec_loss`` (``loss_beta`` 0: L2, as the
official audio config). The same target and loss code as the vision method (``losses``).

Stated choices, from the official fairseq ``examples/data2vec/config/audio/pretraining/base_librispeech.yaml``
and ``models/data2vec_audio.py``:

* masks: wav2vec 2.0 span masking (``data.masking.span_mask``), probability 0.65 of a frame
  starting a span of 10, equal mask counts per utterance;
* the teacher is an EMA of the transformer (positional conv + blocks) only: the conv feature
  encoder, its layer norm and the projection are the student's, shared (``ema_transformer_only``),
  so the teacher encodes the student's current (stop-gradient) unmasked projected features;
  momentum anneals linearly from ``momentum`` (0.999) to ``momentum_final`` (0.9999) over
  ``momentum_anneal_steps`` (30,000) and then stays;
* per-layer instance norm, no final norm (``target_layer_norm='instance'``,
  ``target_final_norm='none'``), loss scaled by 1/sqrt(D) and averaged over the masked frames;
* the waveform is standardised per clip (``model.audio_normalize``, fairseq ``normalize: true``).

Evaluation / export use the student encoder; ``features`` mean-pools its final frames.
Metrics: ``target_std``, ``pred_std`` (per-channel std over masked frames: a collapse monitor),
``mask_ratio``, ``ema_momentum``.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods import teacher as teacher_lib
from ssl_jax.methods.base import AudioMethod, init_module
from ssl_jax.models.cpu.dense import Dense


def masked_channel_std(y, mask):
  """Mean over channels of the std of ``y`` (B, T, D) over the frames where ``mask`` (B, T)."""
  w = mask.astype(jnp.float32)[..., None]
  n = jnp.maximum(jnp.sum(w), 2.0)
  mu = jnp.sum(y * w, axis=(0, 1)) / n
  var = jnp.sum(((y - mu) ** 2) * w, axis=(0, 1)) / (n - 1)
  return jnp.mean(jnp.sqrt(var + 1e-6))


class Data2VecAudio(AudioMethod):
  """data2vec (speech): masked-frame regression of the EMA teacher's averaged top-K FFN outputs."""

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(AudioMethod.Hparams):
    top_k: int
    loss_beta: float
    target_layer_norm: str = 'instance'
    target_final_norm: str = 'none'
    momentum: float
    momentum_final: float
    momentum_anneal_steps: int

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    depth = self.backbone.depth
    if not 0 < m.top_k <= depth:
      raise ValueError(f'config.method.top_k={m.top_k} must be in [1, depth={depth}]')
    self.head = Dense(self.feature_dim, name='final_proj')
    self.momentum_fn = teacher_lib.momentum_schedule(
        m, m.momentum_anneal_steps or config.train.steps, shape='linear')

  def init(self, rng, batch):
    k1, k2, k3 = jax.random.split(rng, 3)
    x = jnp.zeros((2,) + batch['audio'].shape[1:], jnp.float32)
    bb_params, _ = init_module(self.backbone, k1, x)
    d = self.feature_dim
    params = {'backbone': bb_params,
              'final_proj': self.head.init(k2, jnp.zeros((2, d)))['params'],
              'mask_emb': jax.random.uniform(k3, (d,))}   # fairseq: uniform_() init
    teacher = {k: v for k, v in bb_params.items() if k in self.backbone.transformer_keys()}
    return params, {'teacher': {'params': {'backbone': teacher}}}

  def teacher_backbone(self, params, teacher):
    """The teacher's backbone variables: the student's (stop-gradient) feature encoder and
    projection with the EMA transformer."""
    student = jax.lax.stop_gradient(params['backbone'])
    return {**student, **jax.lax.stop_gradient(teacher['params']['backbone'])}

  def targets(self, params, teacher, x):
    out = self.backbone.apply({'params': self.teacher_backbone(params, teacher)}, x,
                              train=False, method=type(self.backbone).encode)
    m = self.hp
    return jax.lax.stop_gradient(losses.data2vec_targets(
        out['ffn'], m.top_k, m.target_layer_norm, m.target_final_norm))

  def loss(self, params, state, views, rng):
    m = self.hp
    x, mask = views['audio'], views['mask']
    target = self.targets(params, state.buffers['teacher'], x)
    enc = self.backbone.apply({'params': params['backbone']}, x, train=True, mask=mask,
                              mask_token=params['mask_emb'], method=type(self.backbone).encode,
                              rngs={'dropout': rng})
    pred = self.head.apply({'params': params['final_proj']}, enc['frames'])
    loss = losses.data2vec_loss(pred, target, mask, m.loss_beta)
    metrics = {'target_std': masked_channel_std(target, mask),
               'pred_std': masked_channel_std(jax.lax.stop_gradient(pred), mask),
               'mask_ratio': jnp.mean(mask.astype(jnp.float32)),
               'ema_momentum': self.momentum_fn(state.step)}
    return loss, (metrics, state.buffers)

  def after_update(self, state):
    """EMA of the transformer part of the student backbone into the teacher, at the momentum of
    the update just made (``teacher.update``'s convention)."""
    mom = self.momentum_fn(state.step - 1)
    keys = self.backbone.transformer_keys()
    online = {k: v for k, v in state.params['backbone'].items() if k in keys}
    new = teacher_lib.ema_update(state.buffers['teacher']['params']['backbone'], online, mom)
    buffers = dict(state.buffers)
    buffers['teacher'] = {'params': {'backbone': new}}
    return state.replace(buffers=buffers)
