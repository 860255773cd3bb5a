r"""wav2vec 2.0's Gumbel-softmax product quantiser.

Baevski et al., "wav2vec 2.0: A Framework for Self-Supervised Learning of Speech Representations",
NeurIPS 2020, Sec. 2 ("Quantization module"): the latent z_t is mapped to logits
:math:`l \in \mathbb{R}^{G \times V}`; in each of the G codebooks one entry is picked by a
straight-through Gumbel softmax (Jang et al., "Categorical Reparameterization with
Gumbel-Softmax", ICLR 2017), the G entries are concatenated, and a linear map gives q_t.
The conventions follow fairseq's ``GumbelVectorQuantizer``
(fairseq/modules/gumbel_vector_quantizer.py) as wav2vec 2.0 uses it
(fairseq/models/wav2vec/wav2vec2.py): G = 2, V = 320, codebook ``vars`` of shape
(1, G * V, d / G) initialised U[0, 1), the logit projection ``weight_proj`` initialised N(0, 1)
with zero bias, temperature 2 -> 0.5 by a factor 0.999995 per update.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def gumbel_temperature(step, start: float = 2.0, end: float = 0.5, decay: float = 0.999995):
  r"""The Gumbel-softmax temperature at update ``step``: :math:`\max(\tau_0 \gamma^{s}, \tau_1)`
  (wav2vec 2.0 Sec. 4.2: 2 -> 0.5 by 0.999995 per update; 2 -> 0.1 for the LARGE models; fairseq
  ``GumbelVectorQuantizer.set_num_updates``). ``step`` may be a Python number or a traced
  integer; the power is taken as ``exp(step * log(decay))`` with the log in double precision:
  float32 stores 1 - decay = 5e-6 with up to 0.6 % error (0.14 % for 0.999995), an error the
  power carries into the temperature."""
  log_decay = math.log(decay)
  return jnp.maximum(start * jnp.exp(jnp.asarray(step, jnp.float32) * log_decay), end)


def gumbel_softmax(rng, logits, temperature, hard: bool = True):
  r"""Gumbel-softmax sample over the last axis (Jang et al. 2017, Eq. 1):
  :math:`y = \mathrm{softmax}((l + g) / \tau)`, :math:`g_i = -\log(-\log u_i)`.

  ``hard``: the straight-through version (Jang et al. 2017, Sec. 2.2; ``torch``'s
  ``gumbel_softmax(hard=True)`` that fairseq calls): the forward value is the exact one-hot of
  :math:`\arg\max y`, the gradient that of the soft sample y.
  """
  g = jax.random.gumbel(rng, logits.shape, jnp.float32)
  soft = jax.nn.softmax((logits.astype(jnp.float32) + g) / temperature, axis=-1)
  if not hard:
    return soft
  one_hot = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
  # (soft - sg(soft)) is exactly 0 forward, so the value is the exact one-hot.
  return one_hot + (soft - jax.lax.stop_gradient(soft))


def _perplexity(probs, eps: float = 1e-7):
  """sum over groups of exp(entropy) of (G, V) distributions; fairseq adds 1e-7 inside the log."""
  return jnp.sum(jnp.exp(-jnp.sum(probs * jnp.log(probs + eps), axis=-1)))


class GumbelVectorQuantizer(nn.Module):
  r"""Product quantiser of wav2vec 2.0 (Baevski et al. 2020, Sec. 2; fairseq
  ``GumbelVectorQuantizer``).

  (B, T, C) -> Dense ``weight_proj`` -> logits (B, T, G, V). Training: one entry per group by a
  hard (straight-through) Gumbel softmax at temperature ``temperature`` (rng stream ``'gumbel'``);
  eval: the argmax of the logits. The G selected codebook vectors of width ``code_dim / G`` are
  concatenated to (B, T, code_dim) and, if ``out_dim`` is set, mapped by a Dense ``project_q``
  (wav2vec 2.0's ``project_q``, there part of the model).

  The perplexities are the two diversity statistics of fairseq: with
  :math:`\bar p_{g} = \frac{1}{N}\sum_{t} \mathrm{softmax}(l_{t,g})` averaged over the N frames
  (the frames where ``mask`` is True, if given: wav2vec 2.0 quantises the masked frames only),

  .. math::
     \mathrm{prob\_perplexity} = \sum_{g=1}^{G} \exp\Big(-\sum_{v=1}^{V} \bar p_{g,v}
       \log \bar p_{g,v}\Big),

  the input of the diversity loss (``losses.wav2vec2_diversity_loss``); ``code_perplexity`` is
  the same with :math:`\bar p` the frequencies of the argmax codes of the logits (no Gumbel
  noise, as fairseq; a monitor, no gradient). Both lie in [G, G * V].

  Attributes:
    num_groups: G (2).
    num_vars: V, entries per group (320).
    code_dim: width of the concatenated codes (fairseq ``vq_dim``; a multiple of G).
    out_dim: width of ``project_q``; None returns the concatenated codes.
    combine_groups: one codebook shared by the G groups (fairseq ``combine_groups``).

  Returns a dict: ``quantized`` (B, T, out_dim or code_dim), ``codes`` (B, T, G) int32 selected
  entries, ``prob_perplexity``, ``code_perplexity``, ``num_vars`` = G * V (a Python int), and
  ``temperature``.
  """
  num_groups: int = 2
  num_vars: int = 320
  code_dim: int = 256
  out_dim: int | None = None
  combine_groups: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temperature=2.0, train: bool = False, mask=None):
    g, v = self.num_groups, self.num_vars
    if self.code_dim % g:
      raise ValueError(f'code_dim {self.code_dim} is not a multiple of num_groups {g}')
    codebooks = 1 if self.combine_groups else g
    codebook = self.param('vars', nn.initializers.uniform(1.0),
                          (1, codebooks * v, self.code_dim // g))
    logits = nn.Dense(g * v, kernel_init=nn.initializers.normal(1.0), dtype=self.dtype,
                      name='weight_proj')(x)
    logits = logits.astype(jnp.float32).reshape(x.shape[:-1] + (g, v))

    weights = jnp.ones(x.shape[:-1], jnp.float32) if mask is None else mask.astype(jnp.float32)
    weights = weights[..., None, None] / jnp.maximum(jnp.sum(weights), 1.0)

    def frame_mean(p):
      return jnp.sum(p * weights, axis=tuple(range(p.ndim - 2)))   # (G, V)

    hard = jax.nn.one_hot(jnp.argmax(logits, axis=-1), v, dtype=jnp.float32)
    code_perplexity = _perplexity(jax.lax.stop_gradient(frame_mean(hard)))
    prob_perplexity = _perplexity(frame_mean(jax.nn.softmax(logits, axis=-1)))

    if train:
      one_hot = gumbel_softmax(self.make_rng('gumbel'), logits, temperature, hard=True)
    else:
      one_hot = hard
    codes = jnp.argmax(one_hot, axis=-1).astype(jnp.int32)
    table = codebook.reshape(codebooks, v, -1)
    if self.combine_groups:
      table = jnp.broadcast_to(table, (g,) + table.shape[1:])
    # A product with the (straight-through) one-hot rather than a gather, so the soft gradient
    # reaches the logits.
    quantized = jnp.einsum('...gv,gvd->...gd', one_hot, table.astype(jnp.float32))
    quantized = quantized.reshape(x.shape[:-1] + (self.code_dim,))
    if self.out_dim is not None:
      quantized = nn.Dense(self.out_dim, dtype=self.dtype, name='project_q')(quantized)
    return {'quantized': quantized, 'codes': codes, 'prob_perplexity': prob_perplexity,
            'code_perplexity': code_perplexity, 'num_vars': g * v,
            'temperature': jnp.asarray(temperature, jnp.float32)}
