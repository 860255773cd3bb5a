"""Self-distillation from an EMA teacher: DINO, iBOT, DINOv2, data2vec, and their collapse
monitors."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.losses.clustering import sinkhorn_knopp


def dino_loss(student_logits, teacher_logits, center, student_temp: float, teacher_temp):
  r"""DINO's multi-crop self-distillation cross-entropy with centering and sharpening.

  Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, Eq. (3)
  and Algorithm 1. With student logits :math:`g_s(x_v)` of every crop v and teacher logits
  :math:`g_t(x_q)` of the global crops q,

  .. math::
     P_t(x_q) = \mathrm{softmax}\big((g_t(x_q) - c) / \tau_t\big), \quad
     \log P_s(x_v) = \mathrm{log\_softmax}\big(g_s(x_v) / \tau_s\big), \\
     \mathcal{L} = \frac{1}{|\{(q, v): v \ne q\}|} \sum_{q \in \mathrm{global}}
        \sum_{v \ne q} \frac{1}{B} \sum_b -P_t(x_q)_b^\top \log P_s(x_v)_b .

  The first ``n_global`` student crops are the same global crops the teacher saw, in the same
  order (pairs with v == q are skipped). The teacher side is under stop-gradient.

  Args:
    student_logits: (V, B, K) for V crops (global first, then local).
    teacher_logits: (G, B, K) for the G global crops, G <= V.
    center: (K,) or (1, K) running center c (the *old* one; update it afterwards with
      :func:`ema_center`).
    student_temp: tau_s (0.1).
    teacher_temp: tau_t, possibly a traced schedule value (0.04 -> 0.07).
  Returns:
    scalar loss.
  """
  t = jax.nn.softmax((jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
                      - jnp.reshape(center, (1, 1, -1))) / teacher_temp, axis=-1)
  return multicrop_cross_entropy(student_logits, t, student_temp)


def multicrop_cross_entropy(student_logits, teacher_probs, student_temp: float):
  r"""The multi-crop cross-entropy of :func:`dino_loss` with the teacher targets given as
  probabilities :math:`P_t(x_q)` (a centred softmax, or Sinkhorn-Knopp codes in DINOv2):
  :math:`\frac{1}{|\{(q, v): v \ne q\}|} \sum_q \sum_{v \ne q} \frac{1}{B} \sum_b
  -P_t(x_q)_b^\top \log\mathrm{softmax}(g_s(x_v)_b / \tau_s)`.

  Args: student_logits (V, B, K), global crops first; teacher_probs (G, B, K), G <= V (treated
  as constants). Returns the scalar loss.
  """
  v, g = student_logits.shape[0], teacher_probs.shape[0]
  t = jax.lax.stop_gradient(teacher_probs).astype(jnp.float32)
  log_s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / student_temp, axis=-1)
  # ce[q, v] = mean_b -t_q . log s_v  for every (teacher crop, student crop) pair.
  ce = -jnp.einsum('qbk,vbk->qv', t, log_s) / student_logits.shape[1]
  pair = 1.0 - jnp.eye(g, v, dtype=jnp.float32)
  return jnp.sum(ce * pair) / jnp.sum(pair)


def ema_center(center, teacher_logits, momentum: float):
  r"""DINO's center update (Caron et al. 2021, Eq. (4)): c <- m c + (1 - m) mean_i g_t(x_i).

  The mean runs over every leading axis of ``teacher_logits`` (crops, global batch, patches),
  so under ``jax.jit`` with a sharded batch it is a global-batch statistic. Returns the new
  center with the shape of ``center``.
  """
  t = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
  batch_mean = jnp.mean(t.reshape(-1, t.shape[-1]), axis=0)
  return momentum * center + (1.0 - momentum) * batch_mean.reshape(center.shape)


def ibot_patch_loss(student_patch_logits, teacher_patch_logits, masks, center,
                    student_temp: float, teacher_temp):
  r"""iBOT masked-image-modelling loss with the online tokenizer (the EMA teacher).

  Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022, Eq. (2): for
  each global crop u, the student sees the masked crop :math:`\hat u` and predicts, at every
  masked patch i (:math:`m_i = 1`), the teacher's centred, sharpened distribution of the
  unmasked crop's patch i:

  .. math::
     \mathcal{L}_{MIM} = \frac{1}{G} \sum_{u} \frac{1}{B} \sum_b
        \frac{\sum_i m_{b,i}\, \big(-P_t^{patch}(u_b)_i^\top \log P_s^{patch}(\hat u_b)_i\big)}
             {\max(1, \sum_i m_{b,i})}

  with :math:`P_t = \mathrm{softmax}((g_t - c') / \tau_t')`,
  :math:`\log P_s = \mathrm{log\_softmax}(g_s / \tau_s)` (only same-view pairs, as the official
  code; an image without masked patches contributes 0 but still counts in the batch mean).

  Args:
    student_patch_logits: (G, B, N, K) student patch logits of the masked global crops.
    teacher_patch_logits: (G, B, N, K) teacher patch logits of the unmasked global crops.
    masks: (G, B, N) bool/float, 1 = masked.
    center: (K,) or (1, 1, K) patch center c'.
    student_temp, teacher_temp: tau_s, tau_t' (the latter may be traced).
  Returns:
    scalar loss.
  """
  t = jax.nn.softmax((jax.lax.stop_gradient(teacher_patch_logits).astype(jnp.float32)
                      - jnp.reshape(center, (1, 1, 1, -1))) / teacher_temp, axis=-1)
  return masked_patch_cross_entropy(student_patch_logits, t, masks, student_temp)


def masked_patch_cross_entropy(student_patch_logits, teacher_patch_probs, masks,
                               student_temp: float):
  r"""The masked-patch cross-entropy of :func:`ibot_patch_loss` with the teacher targets given
  as probabilities (centred softmax, or DINOv2's Sinkhorn-Knopp codes): per image the mean of
  :math:`-P_t^\top \log\mathrm{softmax}(g_s / \tau_s)` over its masked patches (0 if none),
  then the mean over the G x B images. Shapes: (G, B, N, K), (G, B, N, K), (G, B, N)."""
  t = jax.lax.stop_gradient(teacher_patch_probs).astype(jnp.float32)
  log_s = jax.nn.log_softmax(student_patch_logits.astype(jnp.float32) / student_temp, axis=-1)
  m = masks.astype(jnp.float32)
  # where(): a target row outside the mask may hold anything (SK codes there are 0).
  ce = jnp.where(m > 0, -jnp.sum(t * log_s, axis=-1), 0.0)       # (G, B, N)
  per_image = jnp.sum(ce, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
  return jnp.mean(per_image)


def sinkhorn_knopp_targets(teacher_logits, teacher_temp, iterations: int = 3, valid=None):
  r"""DINOv2's teacher targets by Sinkhorn-Knopp centering (Oquab et al., "DINOv2: Learning
  Robust Visual Features without Supervision", TMLR 2024, Sec. 4, after SwAV, Caron et al. 2020):
  instead of ``softmax((g_t - c) / tau_t)`` with a running center c, the teacher's outputs over
  the *global* batch are turned into balanced codes

  .. math::
     Q = \mathrm{diag}(u)\, \exp(g_t^\top / \tau_t)\, \mathrm{diag}(v), \quad
     Q 1_B = \tfrac{1}{K} 1_K, \; Q^\top 1_K = \tfrac{1}{B} 1_B,

  by ``iterations`` (3) alternating prototype-row / sample-column normalisations, returned as
  :math:`B Q^\top` (each sample's code sums to 1; each prototype gets ~B/K of the mass). This is
  :func:`ssl_jax.losses.clustering.sinkhorn_knopp` with :math:`\epsilon = \tau_t` (the same
  algorithm as DINOv2's ``sinkhorn_knopp_teacher``), shared rather than copied.

  Args:
    teacher_logits: (..., K) teacher head outputs; all leading axes are samples (crops x batch,
      or crops x batch x patches).
    teacher_temp: tau_t (may be a traced schedule value).
    iterations: Sinkhorn iterations (3 in DINOv2).
    valid: optional bool array of the leading shape: the samples that take part (DINOv2's patch
      targets use the masked patches only; B is then their global count). Others get 0.
  Returns:
    float32 codes of the shape of ``teacher_logits``.
  """
  shape = teacher_logits.shape
  flat = teacher_logits.reshape(-1, shape[-1])
  v = None if valid is None else valid.reshape(-1).astype(bool)
  q = sinkhorn_knopp(flat, teacher_temp, iterations, v)
  # No valid sample at all (a batch without masked patches) would give 0/0: codes 0 instead.
  q = jnp.where(jnp.isfinite(q), q, 0.0)
  return q.reshape(shape)


def koleo_loss(x, eps: float = 1e-8):
  r"""KoLeo regulariser (Sablayrolles et al., "Spreading vectors for similarity search", ICLR
  2019, from the Kozachenko-Leonenko differential-entropy estimator; DINOv2 Sec. 4):

  .. math::
     \mathcal{L}_{koleo} = -\frac{1}{n} \sum_{i=1}^{n} \log d_{n,i}, \qquad
     d_{n,i} = \min_{j \ne i} \lVert \hat x_i - \hat x_j \rVert_2, \quad
     \hat x = x / \lVert x \rVert_2,

  over the n rows of ``x`` (DINOv2: the student's [CLS] features of one global crop). It pushes
  every feature away from its nearest neighbour, spreading the batch over the sphere. Under
  ``jax.jit`` with a sharded batch the neighbours are searched in the *global* batch (the
  official code searches each GPU's local batch). The neighbour index carries no gradient; the
  distance does, to both ends. ``eps`` as the official code: normalisation floor, and added
  inside the distance and the log so that duplicates stay finite.

  Args: x (n, D), n >= 2. Returns the scalar loss.
  """
  x = x.astype(jnp.float32)
  x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)
  dots = x @ x.T
  n = x.shape[0]
  # Largest inner product = nearest neighbour on the sphere; the diagonal is excluded.
  nn_idx = jnp.argmax(jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, dots), axis=-1)
  d = jnp.linalg.norm(x - x[jax.lax.stop_gradient(nn_idx)] + eps, axis=-1)
  return -jnp.mean(jnp.log(d + eps))


def dinov2_loss(student_cls_logits, teacher_cls_probs, student_patch_logits, teacher_patch_probs,
                masks, student_global_cls, student_temp: float, dino_weight: float = 1.0,
                ibot_weight: float = 1.0, koleo_weight: float = 0.1):
  r"""DINOv2's training objective (Oquab et al. 2024, Sec. 4; ``ssl_meta_arch.py``):

  .. math::
     \mathcal{L} = w_{dino}\, \mathcal{L}_{DINO} + w_{iBOT}\, \mathcal{L}_{iBOT}
        + w_{koleo} \sum_{q \in \mathrm{global}} \mathcal{L}_{koleo}(z^{cls}_q)

  * :math:`\mathcal{L}_{DINO}`: :func:`multicrop_cross_entropy` of the DINO head's [CLS] logits of
    every crop against the teacher's targets of the two global crops (pairs v != q);
  * :math:`\mathcal{L}_{iBOT}`: :func:`masked_patch_cross_entropy` of the (separate) iBOT head's
    patch logits of the masked global crops against the teacher's targets of the same patches;
  * :math:`\mathcal{L}_{koleo}`: :func:`koleo_loss` of the student backbone's [CLS] features
    (before the head) of each global crop, summed over the two crops.

  Teacher targets are the centred softmax (DINO's running center) or Sinkhorn-Knopp codes
  (:func:`sinkhorn_knopp_targets`); defaults are the official weights (1, 1, 0.1).

  Args:
    student_cls_logits: (V, B, K); teacher_cls_probs: (G, B, K);
    student_patch_logits, teacher_patch_probs: (G, B, N, K'); masks: (G, B, N), 1 = masked;
    student_global_cls: (G, B, D) backbone [CLS] features of the global crops.
  Returns:
    (loss, {'dino_loss', 'ibot_loss', 'koleo_loss'}) with the unweighted terms.
  """
  parts = {
      'dino_loss': multicrop_cross_entropy(student_cls_logits, teacher_cls_probs, student_temp),
      'ibot_loss': masked_patch_cross_entropy(student_patch_logits, teacher_patch_probs, masks,
                                              student_temp),
      'koleo_loss': sum(koleo_loss(z) for z in student_global_cls),
  }
  loss = (dino_weight * parts['dino_loss'] + ibot_weight * parts['ibot_loss']
          + koleo_weight * parts['koleo_loss'])
  return loss, parts


def distribution_entropy(p):
  """Collapse monitors of :func:`softmax_entropy` for targets given as probabilities (..., K):
  (mean per-row entropy, entropy of the mean row), in nats; rows that sum to 0 are skipped."""
  p = jax.lax.stop_gradient(p).astype(jnp.float32).reshape(-1, p.shape[-1])
  live = (jnp.sum(p, axis=-1) > 0).astype(jnp.float32)
  ent = -jnp.sum(p * jnp.log(jnp.clip(p, 1e-30)), axis=-1)
  n = jnp.maximum(jnp.sum(live), 1.0)
  pm = jnp.sum(p * live[:, None], axis=0) / n
  return jnp.sum(ent * live) / n, -jnp.sum(pm * jnp.log(jnp.clip(pm, 1e-30)))


def instance_norm_tokens(x, eps: float = 1e-5):
  """Parameter-free instance norm over the token axis: each channel of each image is normalised
  over its T tokens (PyTorch ``F.instance_norm(x.transpose(1, 2))``, data2vec). x: (B, T, D)."""
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axis=1, keepdims=True)
  var = jnp.var(x, axis=1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def data2vec_targets(layers, top_k: int, layer_norm: str = 'instance', final_norm: str = 'none',
                     eps: float = 1e-5):
  r"""data2vec regression targets (Baevski et al., "data2vec: A General Framework for
  Self-supervised Learning in Speech, Vision and Language", ICML 2022, Sec. 3.3):

  .. math:: y_t = \mathrm{FN}\Big(\frac{1}{K} \sum_{l = L - K + 1}^{L} \mathrm{N}(a_t^l)\Big)

  the average of the top K teacher blocks' outputs, each normalised by N: ``'instance'``
  (default; parameter-free instance norm of each channel over the tokens, the paper's choice),
  ``'layer'`` (parameter-free layer norm over channels) or ``'none'``; FN is an optional final
  parameter-free ``'layer'`` norm (fairseq ``layer_norm_targets``, used by the official vision
  config) or ``'instance'`` norm, default ``'none'``.

  Args:
    layers: sequence of L arrays (B, T, D) (teacher block outputs, patch tokens).
    top_k: K.
  Returns:
    (B, T, D) float32 targets.
  """
  if not 0 < top_k <= len(layers):
    raise ValueError(f'top_k={top_k} must be in [1, {len(layers)}] (the number of layers)')

  def norm(x, kind):
    if kind == 'instance':
      return instance_norm_tokens(x, eps)
    if kind == 'layer':
      x = x.astype(jnp.float32)
      mean = jnp.mean(x, axis=-1, keepdims=True)
      return (x - mean) * jax.lax.rsqrt(jnp.var(x, axis=-1, keepdims=True) + eps)
    if kind == 'none':
      return x.astype(jnp.float32)
    raise ValueError(f"data2vec target norm must be 'instance', 'layer' or 'none', got {kind!r}")

  top = [norm(jax.lax.stop_gradient(l), layer_norm) for l in layers[-top_k:]]
  return norm(sum(top) / top_k, final_norm)


def data2vec_loss(pred, target, mask, beta: float = 0.0):
  r"""data2vec regression loss at the masked positions (Baevski et al. 2022, Eq. (2)).

  .. math::
     \ell(f, y) = \begin{cases} \tfrac12 (f - y)^2 / \beta & |f - y| \le \beta \\
                                |f - y| - \tfrac12 \beta & \text{otherwise} \end{cases}

  (Smooth L1; ``beta = 0`` gives the squared error :math:`(f - y)^2`, the L2 loss the vision
  model uses). Per token the loss is summed over the D channels and scaled by
  :math:`1/\sqrt{D}` (as the official implementation), then averaged over masked tokens.

  Args:
    pred: (B, N, D) student predictions; target: (B, N, D) (stop-gradient);
    mask: (B, N), 1 = masked (only these positions count).
  Returns:
    scalar loss.
  """
  diff = pred.astype(jnp.float32) - jax.lax.stop_gradient(target).astype(jnp.float32)
  if beta > 0:
    ad = jnp.abs(diff)
    elem = jnp.where(ad <= beta, 0.5 * diff ** 2 / beta, ad - 0.5 * beta)
  else:
    elem = diff ** 2
  per_token = jnp.sum(elem, axis=-1) / jnp.sqrt(float(pred.shape[-1]))
  m = mask.astype(jnp.float32)
  return jnp.sum(per_token * m) / jnp.maximum(jnp.sum(m), 1.0)


def softmax_entropy(logits, temperature=1.0, center=0.0):
  """Collapse monitors for DINO-style heads (Caron et al. 2021, Sec. 5.3): the mean per-row
  entropy (nats) of softmax((logits - center) / temperature) and the entropy of the batch-mean
  distribution. Per-row entropy -> log K means uniform collapse; marginal entropy -> 0 means
  one dimension dominates. Returns (mean_entropy, marginal_entropy)."""
  logits = jax.lax.stop_gradient(logits).astype(jnp.float32)
  p = jax.nn.softmax((logits - center) / temperature, axis=-1).reshape(-1, logits.shape[-1])
  logp = jnp.log(jnp.clip(p, 1e-30))
  ent = -jnp.mean(jnp.sum(p * logp, axis=-1))
  pm = jnp.mean(p, axis=0)
  marginal = -jnp.sum(pm * jnp.log(jnp.clip(pm, 1e-30)))
  return ent, marginal
