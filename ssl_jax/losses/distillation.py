"""Self-distillation from an EMA teacher: DINO, iBOT, data2vec, and their collapse monitors."""
from __future__ import annotations

import jax
import jax.numpy as jnp


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
  v, g = student_logits.shape[0], teacher_logits.shape[0]
  t = jax.nn.softmax((jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
                      - jnp.reshape(center, (1, 1, -1))) / teacher_temp, axis=-1)
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
  log_s = jax.nn.log_softmax(student_patch_logits.astype(jnp.float32) / student_temp, axis=-1)
  ce = -jnp.sum(t * log_s, axis=-1)                       # (G, B, N)
  m = masks.astype(jnp.float32)
  per_image = jnp.sum(ce * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
  return jnp.mean(per_image)


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
