r"""Speech objectives over masked frames: wav2vec 2.0's contrastive, diversity and feature-penalty
terms and HuBERT's masked prediction of cluster units.

Baevski et al., "wav2vec 2.0: A Framework for Self-Supervised Learning of Speech Representations",
NeurIPS 2020, Sec. 3.2: :math:`\mathcal{L} = \mathcal{L}_m + \alpha \mathcal{L}_d` (alpha = 0.1)
plus fairseq's L2 penalty on the CNN features (weight 10). Hsu et al., "HuBERT: Self-Supervised
Speech Representation Learning by Masked Prediction of Hidden Units", IEEE/ACM TASLP 2021:
cross-entropy of the masked frames against k-means units. The conventions (negative sampling,
-inf for copies of the positive, reductions, accuracy) follow fairseq:
fairseq/models/wav2vec/wav2vec2.py (``sample_negatives``, ``compute_preds``,
``get_extra_losses``), fairseq/criterions/wav2vec_criterion.py,
fairseq/models/hubert/hubert.py (``compute_nce``) and fairseq/criterions/hubert_criterion.py.

Masks are (B, T) bool, True = masked (``data.masking.span_mask``). Shapes stay static under jit:
the masked frames of each row are moved to the front by a stable argsort of the mask, and the
per-row number of masked frames is a traced count, not a shape.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.losses.common import l2_normalize


def _masked_first(mask, num_masked: int | None):
  """(B, N) int32 frame indices with each row's masked frames first, in time order (a stable
  argsort), N = ``num_masked`` or T; and (B,) int32 masked counts (at most N)."""
  order = jnp.argsort(~mask, axis=1, stable=True).astype(jnp.int32)
  if num_masked is not None:
    order = order[:, :num_masked]
  return order, jnp.minimum(jnp.sum(mask, axis=1), order.shape[1]).astype(jnp.int32)


def _fingerprint(x):
  """(..., 2) uint32: a 64-bit hash of the bits of each vector along the last axis.

  Equal vectors get equal fingerprints (integer arithmetic, exact in any order; -0.0 is read as
  0.0); distinct ones collide with probability ~2^-64. Comparing fingerprints finds fairseq's
  ``(y == negatives).all(-1)`` copies without gathering a (B, N, K, D) block of distractors
  (that gather was over half of the value-and-grad time at B = 8, T = 500, D = 256 on the
  2-core CPU: 262 vs 114 ms)."""
  x = x.astype(jnp.float32)
  bits = jax.lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.uint32)
  pos = jnp.arange(x.shape[-1], dtype=jnp.uint32) * jnp.uint32(0x9E3779B9)

  def mix(h):   # murmur3's 32-bit finaliser: every input bit flips each output bit w.p. ~1/2
    h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
    h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)

  return jnp.stack([jnp.sum(mix(bits ^ (pos + jnp.uint32(seed))), axis=-1, dtype=jnp.uint32)
                    for seed in (0x243F6A88, 0x13198A2E)], axis=-1)


def sample_negatives(rng, batch: int, num_masked: int, num_negatives: int, num_valid=None):
  """wav2vec 2.0's distractor indices (fairseq ``Wav2Vec2Model.sample_negatives``).

  For masked frame t of row b, ``num_negatives`` indices drawn uniformly, with replacement, from
  the other masked frames of the same row: ``j ~ U{0, ..., M_b - 2}``, then ``j + 1`` where
  ``j >= t`` (fairseq's shift that skips the positive). ``M_b`` is ``num_valid[b]`` ((B,) ints,
  traced) or ``num_masked``. Where ``M_b < 2`` there is no other frame and the index is ``>=
  M_b`` (callers mask it).

  Returns:
    (batch, num_masked, num_negatives) int32 indices into the row's masked frames.
  """
  m = jnp.full((batch,), num_masked, jnp.int32) if num_valid is None else num_valid
  high = jnp.maximum(m - 1, 1).astype(jnp.int32)[:, None, None]
  j = jax.random.randint(rng, (batch, num_masked, num_negatives), 0, high, dtype=jnp.int32)
  t = jnp.arange(num_masked, dtype=jnp.int32)[None, :, None]
  return j + (j >= t).astype(jnp.int32)


def _cross_sample_negatives(rng, order_valid, counts, num_negatives: int):
  """(B, N, K) flat indices into the (B * N) masked-first frames, drawn uniformly from all masked
  frames of the batch except the anchor itself (fairseq ``cross_sample_negatives``)."""
  b, n = order_valid.shape
  total = jnp.sum(counts)
  flat = jnp.argsort(~order_valid.reshape(-1), stable=True).astype(jnp.int32)  # masked first
  own = (jnp.cumsum(counts) - counts)[:, None] + jnp.arange(n, dtype=jnp.int32)[None, :]
  high = jnp.maximum(total - 1, 1)
  j = jax.random.randint(rng, (b, n, num_negatives), 0, high, dtype=jnp.int32)
  j = j + (j >= own[:, :, None]).astype(jnp.int32)
  return flat[jnp.minimum(j, b * n - 1)], j < total


def wav2vec2_contrastive_logits(context, quantized, mask, rng, num_negatives: int = 100,
                                temperature: float = 0.1, cross_sample_negatives: int = 0,
                                num_masked: int | None = None):
  r"""The logits of :func:`wav2vec2_contrastive_loss`: for each masked frame, the scaled cosine
  similarity to its positive (column 0) and to its ``num_negatives + cross_sample_negatives``
  distractors (fairseq ``compute_preds``).

  Distractors equal to the positive (copies of the same quantised vector, frequent with a
  codebook; found by a 64-bit fingerprint of the vectors' bits) and missing distractors get a
  logit of -inf, as fairseq (which uses -2^30 on TPU).

  Returns:
    logits: (B, N, 1 + K) float32, N = ``num_masked`` or T; row n of utterance b is its n-th
      masked frame in time order.
    valid: (B, N) bool, the row is a masked frame (a real anchor).
    negatives: (B, N, K) int32 distractor indices into the masked-first order (cross-sample ones
      as flat indices into the (B * N) frames, after the within-row ones).
  """
  b = context.shape[0]
  order, counts = _masked_first(mask, num_masked)
  n = order.shape[1]
  valid = jnp.arange(n)[None, :] < counts[:, None]
  take = lambda x: jnp.take_along_axis(x, order[:, :, None], axis=1)
  c = l2_normalize(take(context))           # (B, N, D)
  q_raw = take(quantized)
  q = l2_normalize(q_raw)
  pos = jnp.sum(c * q, axis=-1)              # (B, N)
  fp = _fingerprint(q_raw)                   # (B, N, 2)
  k_in, k_cross = jax.random.split(rng) if cross_sample_negatives else (rng, None)
  neg_logits, neg_ok, neg_fp, neg_index = [], [], [], []
  if num_negatives:
    idx = sample_negatives(k_in, b, n, num_negatives, counts)
    # Similarities to every masked frame of the row, then picked: cheaper than gathering (B, N,
    # K, D) vectors, and its backward is a small scatter.
    sim = jnp.einsum('bnd,bmd->bnm', c, q)
    safe = jnp.minimum(idx, n - 1)
    neg_logits.append(jnp.take_along_axis(sim, safe, axis=2))
    neg_ok.append(idx < counts[:, None, None])
    neg_fp.append(jax.vmap(lambda f, i: f[i])(fp, safe))
    neg_index.append(idx)
  if cross_sample_negatives:
    flat_idx, ok = _cross_sample_negatives(k_cross, valid, counts, cross_sample_negatives)
    sim = c.reshape(b * n, -1) @ q.reshape(b * n, -1).T
    neg_logits.append(jnp.take_along_axis(sim, flat_idx.reshape(b * n, -1), axis=1)
                      .reshape(flat_idx.shape))
    neg_ok.append(ok)
    neg_fp.append(fp.reshape(b * n, 2)[flat_idx])
    neg_index.append(flat_idx)
  neg = jnp.concatenate(neg_logits, axis=-1)
  ok = jnp.concatenate(neg_ok, axis=-1)
  # fairseq ``neg_is_pos = (y == negatives).all(-1)``: copies of the positive.
  copies = jnp.all(jnp.concatenate(neg_fp, axis=2) == fp[:, :, None, :], axis=-1)
  neg = jnp.where(ok & ~copies, neg, -jnp.inf)
  logits = jnp.concatenate([pos[..., None], neg], axis=-1) / temperature
  return logits, valid, jnp.concatenate(neg_index, axis=-1)


def wav2vec2_contrastive_loss(context, quantized, mask, rng, num_negatives: int = 100,
                              temperature: float = 0.1, cross_sample_negatives: int = 0,
                              num_masked: int | None = None):
  r"""wav2vec 2.0's contrastive loss :math:`\mathcal{L}_m` over the masked frames.

  Baevski et al. 2020, Eq. 3: for the context vector :math:`c_t` of a masked frame t, its
  quantised latent :math:`q_t` and a set :math:`Q_t` of :math:`q_t` and K distractors,

  .. math::
     \mathcal{L}_m = -\log \frac{\exp(\mathrm{sim}(c_t, q_t)/\kappa)}
       {\sum_{\tilde q \in Q_t} \exp(\mathrm{sim}(c_t, \tilde q)/\kappa)}, \qquad
     \mathrm{sim}(a, b) = \frac{a^\top b}{\lVert a \rVert \lVert b \rVert},

  averaged over all masked frames of the batch (fairseq's criterion sums the cross-entropy and
  divides by the number of masked frames, ``sample_size``). The K = 100 distractors of frame t
  are drawn uniformly from the other masked frames of the same utterance
  (:func:`sample_negatives`); ``cross_sample_negatives`` more come from the masked frames of the
  whole batch (fairseq's option; 0 in wav2vec 2.0). A distractor identical to :math:`q_t` gets
  logit -inf (fairseq ``compute_preds``). kappa = ``temperature`` = 0.1.

  Args:
    context: (B, T, D) transformer outputs after ``final_proj``.
    quantized: (B, T, D) quantised targets after ``project_q`` (the unmasked features'
      quantisation); only the masked frames are used.
    mask: (B, T) bool, True = masked. Rows may mask different numbers of frames (each row's
      distractors come from its own count); ``span_mask(equalize=True)`` gives equal counts as
      fairseq.
    rng: key for the distractors, passed unchanged to :func:`sample_negatives` (split in two,
      within-row then cross-sample, when ``cross_sample_negatives > 0``).
    num_masked: a static number M of masked frames per row: work on (B, M) frames instead of
      (B, T), a row with more masked frames using its first M. Exact when every row masks M
      frames and M is known when tracing (a host-side mask); None (default) keeps T rows with
      a traced per-row count, since under jit a random mask's M is not a static shape.

  Returns:
    (loss, metrics): metrics has ``accuracy``, the fraction of masked frames whose positive has
    the largest logit (fairseq's ``correct``: argmax 0 and not all logits equal), and
    ``num_masked``, the number of masked frames in the batch.
  """
  logits, valid, _ = wav2vec2_contrastive_logits(
      context, quantized, mask, rng, num_negatives, temperature, cross_sample_negatives,
      num_masked)
  nll = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
  weight = valid.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(weight), 1.0)
  loss = jnp.sum(jnp.where(valid, nll, 0.0)) / count
  logits = jax.lax.stop_gradient(logits)
  correct = (jnp.argmax(logits, axis=-1) == 0) & ~(jnp.argmin(logits, axis=-1) == 0)
  return loss, {'accuracy': jnp.sum(correct * weight) / count, 'num_masked': jnp.sum(weight)}


def wav2vec2_diversity_loss(prob_perplexity, num_vars):
  r"""wav2vec 2.0's codebook diversity penalty, in fairseq's form (``get_extra_losses``):

  .. math::
     \mathcal{L}_d = \frac{GV - \sum_{g=1}^{G} \exp\big(H(\bar p_g)\big)}{GV}, \qquad
     H(\bar p_g) = -\sum_{v=1}^{V} \bar p_{g,v} \log \bar p_{g,v},

  with ``prob_perplexity`` :math:`= \sum_g \exp H(\bar p_g)` and ``num_vars`` = GV from
  ``models.quantizer.GumbelVectorQuantizer``. 0 when every group uses its V entries uniformly,
  (GV - G) / GV when each group always picks one entry. The paper's Eq. 4 writes
  :math:`\mathcal{L}_d = \frac{1}{GV} \sum_g -H(\bar p_g)` (min -G log V / GV); fairseq's is
  :math:`1 + \frac{1}{GV} \sum_g -\exp H(\bar p_g)`: each entropy replaced by its perplexity,
  plus the constant 1 (min 0). Both fall as the entropies rise and are minimised by uniform
  :math:`\bar p_g`, but their values and gradients differ (fairseq's gradient is the paper's
  times :math:`\exp H(\bar p_g)` per group). The caller weighs it by alpha = 0.1 (Sec. 4.2)."""
  return (num_vars - prob_perplexity) / num_vars


def feature_l2_penalty(features):
  r"""fairseq wav2vec 2.0's ``features_pen``: :math:`\frac{1}{N}\sum f^2`, the mean square of the
  CNN encoder's features (before the layer norm); weight 10 in fairseq's
  ``loss_weights=[0.1, 10]`` (not in the paper)."""
  return jnp.mean(jnp.square(features.astype(jnp.float32)))


def hubert_logits(frames_proj, label_embeddings, temperature: float = 0.1):
  r"""HuBERT's logits: :math:`\mathrm{sim}(A o_t, e_c) / \tau` for every frame t and unit c
  (Hsu et al. 2021; fairseq ``HubertModel.compute_nce``, logit_temp 0.1), sim the cosine.

  fairseq puts the target unit first and all K units as "negatives", the target's copy at -inf;
  that softmax is exactly the softmax over these K logits at the target unit.

  Args:
    frames_proj: (B, T, d) the transformer outputs projected by A (``final_proj``).
    label_embeddings: (K, d) the unit embeddings e_c (``label_embs_concat``).

  Returns:
    (B, T, K) float32 logits.
  """
  o = l2_normalize(frames_proj)
  e = l2_normalize(label_embeddings)
  return jnp.einsum('btd,kd->btk', o, e) / temperature


def hubert_loss(logits, labels, mask, unmasked_weight: float = 0.0, masked_weight: float = 1.0):
  r"""HuBERT's masked prediction loss (Hsu et al. 2021; fairseq ``HubertCriterion``).

  With :math:`p_f(c \mid \tilde X, t) = \frac{\exp(\mathrm{sim}(A o_t, e_c)/\tau)}
  {\sum_{c'=1}^{C} \exp(\mathrm{sim}(A o_t, e_{c'})/\tau)}` (:func:`hubert_logits`), M the
  masked frames and :math:`z_t` the unit of frame t,

  .. math::
     L_m = -\sum_{t \in M} \log p_f(z_t \mid \tilde X, t), \quad
     L_u = -\sum_{t \notin M} \log p_f(z_t \mid \tilde X, t), \quad
     L = \frac{\beta_m L_m + \beta_u L_u}{|M| + [\beta_u > 0]\,(BT - |M|)} ,

  i.e. fairseq's normalisation by ``sample_size`` (the masked frames, plus the unmasked ones when
  their weight is non-zero). HuBERT uses :math:`\beta_m = 1, \beta_u = 0` (the paper's alpha =
  1: masked frames only). ``masked_weight`` and ``unmasked_weight`` are static Python floats.

  Args:
    logits: (B, T, K) from :func:`hubert_logits`.
    labels: (B, T) int unit of every frame.
    mask: (B, T) bool, True = masked.

  Returns:
    (loss, metrics): ``loss_masked`` and ``loss_unmasked`` (mean cross-entropies),
    ``correct_masked`` and ``correct_unmasked`` (fraction of frames whose unit has the largest
    logit; fairseq's ``correct_m`` / ``count_m``).
  """
  logits = logits.astype(jnp.float32)
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_prob, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  m = mask.astype(jnp.float32)
  u = 1.0 - m
  n_m, n_u = jnp.sum(m), jnp.sum(u)
  sum_m, sum_u = jnp.sum(nll * m), jnp.sum(nll * u)
  total, size = 0.0, 0.0
  if masked_weight > 0:
    total, size = total + masked_weight * sum_m, size + n_m
  if unmasked_weight > 0:
    total, size = total + unmasked_weight * sum_u, size + n_u
  loss = total / jnp.maximum(size, 1.0)
  sg = jax.lax.stop_gradient(logits)
  # fairseq's compute_correct on its (target, every unit with the target's copy at -inf) logits:
  # argmax 0, i.e. the target's logit is the largest, ties counting as correct.
  target = jnp.take_along_axis(sg, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  correct = (target >= jnp.max(sg, axis=-1)).astype(jnp.float32)
  return loss, {
      'loss_masked': sum_m / jnp.maximum(n_m, 1.0),
      'loss_unmasked': sum_u / jnp.maximum(n_u, 1.0),
      'correct_masked': jnp.sum(correct * m) / jnp.maximum(n_m, 1.0),
      'correct_unmasked': jnp.sum(correct * u) / jnp.maximum(n_u, 1.0),
  }
