r"""wav2vec 2.0 (Baevski et al., "wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
Representations", NeurIPS 2020).

The conv feature encoder turns the waveform into 20 ms latents z; spans of them are masked (the
projected latents replaced by a learned mask embedding) before the transformer; a Gumbel product
quantiser (``models.quantizer.GumbelVectorQuantizer``, G = 2 groups of V = 320 entries) turns the
*unmasked* latents of the masked frames into targets q, and the context c_t of each masked frame
must pick its q_t among K = 100 distractors drawn from the other masked frames of the same
utterance:

.. math:: \mathcal{L} = \mathcal{L}_m + \alpha \mathcal{L}_d + \lambda \overline{z^2}, \quad
          \mathcal{L}_m = -\log \frac{e^{\mathrm{sim}(c_t, q_t)/\kappa}}
                                   {\sum_{\tilde q \in Q_t} e^{\mathrm{sim}(c_t, \tilde q)/\kappa}}

(``losses.wav2vec2_contrastive_loss``, kappa 0.1; ``losses.wav2vec2_diversity_loss``, alpha 0.1;
fairseq's feature penalty, lambda 10, ``losses.feature_l2_penalty``).

Stated choices, from fairseq ``examples/wav2vec/config/pretraining/wav2vec2_base_librispeech.yaml``
and ``models/wav2vec/wav2vec2.py``:

* masks: span masking (``data.masking.span_mask``), probability 0.65, span 10, equal counts per
  utterance (``require_same_masks``);
* the quantiser reads the layer-normed conv latents (before the projection), quantises only the
  masked frames' (its perplexities are over them), codes of ``code_dim`` = ``final_dim`` (256)
  then ``project_q`` to ``final_dim``; the context goes through ``final_proj`` to ``final_dim``;
* the Gumbel temperature decays from 2 to 0.5 by a factor 0.999995 per update
  (``models.quantizer.gumbel_temperature``);
* ``model.feature_grad_mult`` 0.1 scales the gradient flowing into the conv feature encoder's
  output (fairseq's GradMultiply; a backbone field, ``models/audio.py``);
* the feature penalty is the mean square of the conv encoder's output before its layer norm.

Evaluation / export use the encoder; ``features`` mean-pools its final frames.
Metrics: ``contrastive``, ``diversity``, ``feature_pen``, ``accuracy`` (positive ranked first),
``prob_perplexity``, ``code_perplexity``, ``gumbel_temperature``, ``mask_ratio``.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssl_jax import losses
from ssl_jax.methods.base import AudioMethod, init_module
from ssl_jax.models.cpu.dense import Dense
from ssl_jax.models.quantizer import GumbelVectorQuantizer, gumbel_temperature


class Wav2Vec2(AudioMethod):
  """wav2vec 2.0: contrastive prediction of quantised latents at masked frames."""

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(AudioMethod.Hparams):
    final_dim: int
    num_groups: int = 2
    num_vars: int = 320
    num_negatives: int = 100
    cross_sample_negatives: int = 0
    logit_temp: float = 0.1
    diversity_weight: float = 0.1
    feature_pen_weight: float = 10.0
    temp_start: float = 2.0
    temp_end: float = 0.5
    temp_decay: float = 0.999995

  def __init__(self, config):
    super().__init__(config)
    m = self.hp
    if m.final_dim % m.num_groups:
      raise ValueError(f'config.method.final_dim={m.final_dim} must be a multiple of '
                       f'num_groups={m.num_groups}')
    self.quantizer = GumbelVectorQuantizer(num_groups=m.num_groups, num_vars=m.num_vars,
                                           code_dim=m.final_dim, out_dim=m.final_dim)
    self.final_proj = Dense(m.final_dim, name='final_proj')

  def init(self, rng, batch):
    k1, k2, k3, k4 = jax.random.split(rng, 4)
    x = jnp.zeros((2,) + batch['audio'].shape[1:], jnp.float32)
    bb_params, _ = init_module(self.backbone, k1, x)
    feats = self.backbone.apply({'params': bb_params}, x, method=type(self.backbone).encode)
    d = self.feature_dim
    params = {'backbone': bb_params,
              'quantizer': self.quantizer.init({'params': k2, 'gumbel': k2},
                                               feats['features'])['params'],
              'final_proj': self.final_proj.init(k3, jnp.zeros((2, d)))['params'],
              'mask_emb': jax.random.uniform(k4, (d,))}   # fairseq: uniform_() init
    return params, {}

  def temperature(self, step):
    m = self.hp
    return gumbel_temperature(step, m.temp_start, m.temp_end, m.temp_decay)

  def loss(self, params, state, views, rng):
    m = self.hp
    k_drop, k_gumbel, k_neg = jax.random.split(rng, 3)
    x, mask = views['audio'], views['mask']
    enc = self.backbone.apply({'params': params['backbone']}, x, train=True, mask=mask,
                              mask_token=params['mask_emb'], method=type(self.backbone).encode,
                              rngs={'dropout': k_drop})
    tau = self.temperature(state.step)
    q = self.quantizer.apply({'params': params['quantizer']}, enc['features'], tau, train=True,
                             mask=mask, rngs={'gumbel': k_gumbel})
    context = self.final_proj.apply({'params': params['final_proj']}, enc['frames'])
    contrastive, aux = losses.wav2vec2_contrastive_loss(
        context, q['quantized'], mask, k_neg, m.num_negatives, m.logit_temp,
        m.cross_sample_negatives)
    diversity = losses.wav2vec2_diversity_loss(q['prob_perplexity'], q['num_vars'])
    feature_pen = losses.feature_l2_penalty(enc['conv'])
    loss = contrastive + m.diversity_weight * diversity + m.feature_pen_weight * feature_pen
    metrics = {'contrastive': contrastive, 'diversity': diversity, 'feature_pen': feature_pen,
               'accuracy': aux['accuracy'], 'prob_perplexity': q['prob_perplexity'],
               'code_perplexity': q['code_perplexity'], 'gumbel_temperature': tau,
               'mask_ratio': jnp.mean(mask.astype(jnp.float32))}
    return loss, (metrics, state.buffers)
