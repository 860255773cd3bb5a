"""Online clustering with balanced assignments: SwAV and its Sinkhorn-Knopp."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sinkhorn_knopp(scores, epsilon: float = 0.05, iterations: int = 3, valid=None):
  r"""Sinkhorn-Knopp equal-partition codes of SwAV (Caron et al. 2020, Sec. 3.1 and Alg. 1).

  Solves :math:`\max_{Q \in \mathcal{Q}} \mathrm{Tr}(Q^\top C^\top Z) + \epsilon H(Q)` over the
  transportation polytope :math:`\mathcal{Q} = \{Q \in \mathbb{R}_+^{K \times B} : Q 1_B =
  \frac{1}{K} 1_K, Q^\top 1_K = \frac{1}{B} 1_B\}` by ``iterations`` alternating row / column
  normalisations of :math:`\exp(C^\top Z / \epsilon)`, exactly as ``distributed_sinkhorn`` of the
  official code (rows = prototypes, columns = samples, last step a column normalisation), and
  returns :math:`B\,Q^\top`: one code per sample that sums to 1 over the K prototypes, each
  prototype receiving ~B/K of the mass. The sums run over the *global* batch.

  Args:
    scores: (B, K) prototype scores ``z . c_k`` (treated as constants: stop_gradient).
    epsilon: entropy regularisation (0.05 in the paper).
    iterations: number of Sinkhorn iterations (3 in the paper).
    valid: optional (B,) bool: columns that take part (others get a zero code and are not
      counted in B). Used for SwAV's queue before it is full.

  Returns:
    (B, K) codes ``q``.
  """
  scores = jax.lax.stop_gradient(scores.astype(jnp.float32))
  logits = scores / epsilon
  if valid is None:
    valid = jnp.ones((scores.shape[0],), bool)
  # Subtracting the global max changes nothing after the first normalisation (it is a common
  # factor) and keeps exp finite for any epsilon.
  logits = logits - jnp.max(jnp.where(valid[:, None], logits, -jnp.inf))
  q = jnp.where(valid[:, None], jnp.exp(logits), 0.0).T  # (K, B)
  k = q.shape[0]
  b = jnp.sum(valid).astype(jnp.float32)
  q = q / jnp.sum(q)
  for _ in range(iterations):
    q = q / jnp.sum(q, axis=1, keepdims=True) / k
    q = q / jnp.maximum(jnp.sum(q, axis=0, keepdims=True), 1e-30) / b
  return (q * b).T


def swav(scores, assign_crops=(0, 1), temperature: float = 0.1, epsilon: float = 0.05,
         iterations: int = 3, queue_scores=None, queue_valid=None):
  r"""SwAV swapped-prediction loss with multi-crop (Caron et al., "Unsupervised Learning of
  Visual Features by Contrasting Cluster Assignments", NeurIPS 2020, Eq. (1)-(3)).

  For every crop ``s`` in ``assign_crops`` (the two global crops) the codes :math:`q_s` come
  from Sinkhorn-Knopp (``sinkhorn_knopp``) over the global batch, without gradient; every *other*
  crop ``t`` predicts them through a softmax over the prototype scores:

  .. math::
     p_t^{(k)} = \frac{\exp(z_t^\top c_k / \tau)}{\sum_{k'} \exp(z_t^\top c_{k'} / \tau)}, \qquad
     \ell(z_t, q_s) = -\sum_k q_s^{(k)} \log p_t^{(k)},

  .. math::
     \mathcal{L} = \frac{1}{|S|} \sum_{s \in S} \frac{1}{V - 1} \sum_{t \ne s}
                   \frac{1}{B}\sum_b \ell(z_{t,b}, q_{s,b}),

  with V crops in all (official main_swav.py).

  Args:
    scores: sequence of V arrays (B, K): ``z_t . c_k`` for each crop (z and c L2-normalised).
    assign_crops: indices of the crops codes are computed from.
    temperature: tau (0.1).
    epsilon, iterations: Sinkhorn parameters.
    queue_scores: optional sequence (one per assign crop) of (L, K) scores of queued past
      features, prepended to the batch in Sinkhorn (codes of the current batch only are used).
    queue_valid: optional scalar bool: whether the queue takes part (e.g. once it is full).

  Returns:
    (loss, aux) with aux = {'code_entropy': mean entropy of the codes}.
  """
  n_crops = len(scores)
  bsz = scores[0].shape[0]
  total, entropy = 0.0, 0.0
  for i, s in enumerate(assign_crops):
    out = scores[s]
    valid = None
    if queue_scores is not None:
      q_len = queue_scores[i].shape[0]
      out = jnp.concatenate([queue_scores[i], out], axis=0)
      use = jnp.asarray(True if queue_valid is None else queue_valid)
      valid = jnp.concatenate([jnp.broadcast_to(use, (q_len,)), jnp.ones((bsz,), bool)])
    q = sinkhorn_knopp(out, epsilon, iterations, valid)[-bsz:]
    entropy += -jnp.mean(jnp.sum(q * jnp.log(jnp.maximum(q, 1e-12)), axis=1))
    sub = 0.0
    for t in range(n_crops):
      if t == s:
        continue
      log_p = jax.nn.log_softmax(scores[t].astype(jnp.float32) / temperature, axis=-1)
      sub -= jnp.mean(jnp.sum(q * log_p, axis=1))
    total += sub / (n_crops - 1)
  n = len(assign_crops)
  return total / n, {'code_entropy': entropy / n}
