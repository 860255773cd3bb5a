"""Contrastive losses over one InfoNCE core: SimCLR's NT-Xent, InstDis and CMC memory banks, CPC,
MoCo v1/v2 (queue) and v3 (in-batch), NNCLR, PIRL.

Every objective here is a cross-entropy that picks one positive among candidates, the InfoNCE of
van den Oord, Li & Vinyals, "Representation Learning with Contrastive Predictive Coding", 2018,
Eq. 4; the families differ only in how the logits are built (which candidates, which scale) and
where the label is. ``info_nce`` is that core; each loss builds its logits and calls it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.losses.common import l2_normalize


def info_nce_terms(logits, labels):
  r"""The InfoNCE core, per row: the negative log-likelihood of each row's positive and whether
  it scored highest.

  van den Oord, Li & Vinyals 2018, Eq. 4: for row i of the (N, C) ``logits`` (a score
  :math:`\ell_{ij}` of anchor i against each of C candidates, temperature already applied) whose
  positive is candidate :math:`y_i` (``labels``),

  .. math::
     \mathrm{nll}_i = -\log \frac{\exp(\ell_{i, y_i})}{\sum_{j=1}^{C} \exp(\ell_{ij})} .

  Candidates that must not compete (an anchor against itself) carry a logit of -inf.

  Returns:
    ((N,) nll, (N,) bool: the positive has the largest logit).
  """
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_prob, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
  return nll, jnp.argmax(logits, axis=-1) == labels


def info_nce(logits, labels):
  r""":math:`\mathcal{L} = \frac1N \sum_i \mathrm{nll}_i` of :func:`info_nce_terms`, the InfoNCE
  every loss of this module reduces to. Returns (loss, accuracy), accuracy being the fraction of
  rows whose positive has the largest logit."""
  nll, correct = info_nce_terms(logits, labels)
  return jnp.mean(nll), jnp.mean(correct)


def nt_xent(z1, z2, temperature: float = 0.1):
  r"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

  Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020,
  Eq. (1). With the 2N projections :math:`z` of N images under two views, cosine similarity
  :math:`s_{i,j} = z_i^\top z_j / (\lVert z_i\rVert \lVert z_j\rVert)` and positive pair
  :math:`(i, j(i))`,

  .. math::
     \ell_{i} = -\log \frac{\exp(s_{i,j(i)}/\tau)}{\sum_{k=1}^{2N} \mathbb{1}_{[k \ne i]}
                \exp(s_{i,k}/\tau)}, \qquad
     \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i .

  Args:
    z1, z2: (N, D) projections of the two views; row n of z1 and of z2 come from the same image.
    temperature: tau.

  Returns:
    (loss, accuracy) where accuracy is the fraction of anchors whose positive has the highest
    similarity among the 2N - 1 candidates (a cheap health metric).
  """
  n = z1.shape[0]
  z = l2_normalize(jnp.concatenate([z1, z2], axis=0))
  logits = (z @ z.T) / temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
  positives = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(0, n)])
  return info_nce(logits, positives)


def instance_discrimination(v, bank, index, temperature: float = 0.07):
  r"""Non-parametric instance discrimination with a full softmax over a memory bank.

  Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR
  2018, Eq. (2): with L2-normalised features :math:`v = f_\theta(x)` and the memory bank
  :math:`V = \{v_j\}_{j=1}^{n}` (one row per training image),

  .. math::
     P(i \mid v) = \frac{\exp(v_i^\top v / \tau)}{\sum_{j=1}^{n} \exp(v_j^\top v / \tau)}, \qquad
     \mathcal{L} = -\frac{1}{B} \sum_b \log P(\mathrm{index}_b \mid v_b).

  This is the exact ("full softmax") objective of the paper's Eq. (2), i.e. the official code's
  ``LinearAverage`` + cross-entropy, not its NCE approximation (Eq. 3-7). The bank is a constant
  (no gradient flows into it); the positive :math:`v_i` is the bank's current entry for the image.

  Args:
    v: (B, D) L2-normalised features of the batch.
    bank: (n, D) memory bank.
    index: (B,) int image indices into the bank.
    temperature: tau (0.07).

  Returns:
    (loss, accuracy): accuracy = fraction of the batch whose own bank entry scores highest.
  """
  logits = v.astype(jnp.float32) @ jax.lax.stop_gradient(bank).astype(jnp.float32).T
  return info_nce(logits / temperature, index)


def memory_bank_update(bank, index, v, momentum: float = 0.5):
  r"""InstDis memory update (Wu et al. 2018, Sec. 3.1; official ``LinearAverage.backward``):

  .. math::
     v_i \leftarrow \frac{m\, v_i + (1 - m)\, f_i}{\lVert m\, v_i + (1 - m)\, f_i \rVert_2}

  for every image index i of the batch, as a scatter into the (n, D) bank (jittable; with a sharded
  batch the scatter is global). If an index occurs twice in the batch (a batch spanning an epoch
  boundary), only its last occurrence is written, so the result is deterministic.
  """
  v = jax.lax.stop_gradient(v).astype(bank.dtype)
  index = index.astype(jnp.int32)
  new_rows = l2_normalize(momentum * bank[index] + (1.0 - momentum) * v).astype(bank.dtype)
  b = index.shape[0]
  later_dup = jnp.any((index[:, None] == index[None, :])
                      & (jnp.arange(b)[None, :] > jnp.arange(b)[:, None]), axis=1)
  target = jnp.where(later_dup, bank.shape[0], index)  # out of bounds -> dropped
  return bank.at[target].set(new_rows, mode='drop')


CMC_GRAPHS = ('full', 'core')


def cmc_view_pairs(num_views: int, graph: str = 'full') -> list[tuple[int, int]]:
  """The view pairs (a, b), a < b, that CMC contrasts: every pair ('full' graph) or the first view
  with each other one ('core' view) (Tian et al. 2020, Sec. 3.4)."""
  if graph not in CMC_GRAPHS:
    raise ValueError(f'CMC graph {graph!r}: use one of {CMC_GRAPHS}')
  if graph == 'core':
    return [(0, b) for b in range(1, num_views)]
  return [(a, b) for a in range(num_views) for b in range(a + 1, num_views)]


def cmc_loss(feats, banks, index, temperature: float = 0.07, graph: str = 'full'):
  r"""Contrastive Multiview Coding with memory banks and a full softmax over them.

  Tian, Krishnan & Isola, "Contrastive Multiview Coding", ECCV 2020, Sec. 3.2-3.4. Every view
  :math:`V_m` of an image (e.g. the L and ab channels of its Lab colour) has its own encoder and an
  L2-normalised embedding :math:`z^m_i`; a memory bank :math:`M^m` per view holds a running average
  of every training image's embedding in that view (:func:`memory_bank_update`). The two-view
  objective contrasts one view's embedding against the *other* view's bank, the positive being the
  same image's row:

  .. math::
     \mathcal{L}^{V_a, V_b} = -\frac{1}{B}\sum_i \log
        \frac{\exp(z^a_i \cdot M^b_i / \tau)}{\sum_{j=1}^{n} \exp(z^a_i \cdot M^b_j / \tau)},
     \qquad \mathcal{L}(V_a, V_b) = \mathcal{L}^{V_a, V_b} + \mathcal{L}^{V_b, V_a},

  and with more views the *full graph* sums :math:`\mathcal{L}(V_a, V_b)` over all pairs a < b,
  the *core view* over the pairs (1, b), b > 1 (:func:`cmc_view_pairs`). The softmax runs over all
  n bank rows (the exact objective the official code's NCE / sampled-softmax with K = 16,384
  negatives approximates), as :func:`instance_discrimination` does for one view. Banks get no
  gradient.

  Args:
    feats: list of M (B, D) L2-normalised embeddings, one per view.
    banks: list of M (n, D) memory banks, in the same view order.
    index: (B,) int image indices into the banks.
    temperature: tau (0.07).
    graph: 'full' or 'core'.

  Returns:
    (loss, accuracy): accuracy = mean over the contrasted directions of the fraction of the batch
    whose own row in the other view's bank scores highest.
  """
  if len(feats) != len(banks) or len(feats) < 2:
    raise ValueError(f'cmc_loss needs one bank per view and >= 2 views, got {len(feats)} '
                     f'embeddings and {len(banks)} banks')
  total, accs = 0.0, []
  for a, b in cmc_view_pairs(len(feats), graph):
    for x, y in ((a, b), (b, a)):
      loss, acc = instance_discrimination(feats[x], banks[y], index, temperature)
      total, accs = total + loss, accs + [acc]
  return total, sum(accs) / len(accs)


def cpc_infonce(preds, targets, steps):
  r"""Contrastive Predictive Coding InfoNCE over a grid of patch latents.

  van den Oord, Li & Vinyals, "Representation Learning with Contrastive Predictive Coding", 2018
  (Eq. 4, images: Sec. 3.3), and Henaff et al., "Data-Efficient Image Recognition with Contrastive
  Predictive Coding", ICML 2020 (CPC v2, Sec. 3.1 and its appendix pseudocode). An image is a
  grid of patch latents :math:`z_{i,j}`; a context network that sees rows :math:`\le i` gives
  :math:`c_{i,j}`, and a linear map per step predicts :math:`\hat z_{i+k,j} = W_k c_{i,j}`. Each
  prediction is scored against every patch latent of the batch (all positions of all images,
  the set :math:`\mathcal{Z}`); the positive is the latent it predicts:

  .. math::
     \mathcal{L} = -\frac{1}{|\mathcal{P}|} \sum_{(b,i,j,k) \in \mathcal{P}} \log
        \frac{\exp(\hat z^{\,b}_{i+k,j} \cdot z^{b}_{i+k,j})}
             {\sum_{z_l \in \mathcal{Z}} \exp(\hat z^{\,b}_{i+k,j} \cdot z_l)},

  where :math:`\mathcal{P}` holds every prediction whose target is inside the grid
  (:math:`i + k < H`) for every k in ``steps``. The mean runs over all predictions of all steps (the
  paper's pseudocode sums per-step means; with one step they coincide). Any scale (the paper's
  ``emb_scale``, an inverse temperature) is applied to ``preds`` by the caller.

  Args:
    preds: sequence, one per k in ``steps``, of (B, H, W, D) predictions; ``preds[s][b, i, j]``
      predicts ``targets[b, i + steps[s], j]`` (rows ``i >= H - k`` are ignored).
    targets: (B, H, W, D) patch latents (the targets and the negatives).
    steps: the row offsets k (ints >= 1 and < H), one per entry of ``preds``.

  Returns:
    (loss, accuracy): accuracy = fraction of predictions whose own target scores highest.
  """
  b, h, w, d = targets.shape
  if len(preds) != len(steps):
    raise ValueError(f'cpc_infonce: {len(preds)} prediction maps for {len(steps)} steps')
  flat = targets.reshape(b * h * w, d).astype(jnp.float32)
  nll, correct = [], []
  for p, k in zip(preds, steps):
    if not 1 <= k < h:
      raise ValueError(f'cpc_infonce: step {k} is not in [1, {h - 1}] for a grid of {h} rows')
    q = p[:, :h - k].reshape(-1, d).astype(jnp.float32)
    logits = q @ flat.T
    bi, ii, jj = jnp.meshgrid(jnp.arange(b), jnp.arange(h - k), jnp.arange(w), indexing='ij')
    labels = (bi * h * w + (ii + k) * w + jj).reshape(-1)
    row_nll, row_correct = info_nce_terms(logits, labels)
    nll.append(row_nll)
    correct.append(row_correct)
  return jnp.mean(jnp.concatenate(nll)), jnp.mean(jnp.concatenate(correct))


def info_nce_with_negatives(q, positives, negatives, temperature: float):
  r"""InfoNCE of each query against its own positive and a shared set of negatives, all
  L2-normalised: logits :math:`[q_i \cdot k_i,\; q_i \cdot n_1, \dots, q_i \cdot n_K] / \tau`,
  label 0 (the positive first). MoCo's queue (:func:`info_nce_queue`) and PIRL's memory bank
  (:func:`memory_bank_info_nce`) are this with different sources of negatives.

  Args:
    q: (N, D) queries; positives: (N, D), row n for query n; negatives: (K, D).
    temperature: tau.

  Returns:
    (loss, accuracy): accuracy is the fraction of queries whose positive beats every negative.
  """
  q, k, n = l2_normalize(q), l2_normalize(positives), l2_normalize(negatives)
  l_pos = jnp.sum(q * k, axis=-1, keepdims=True)
  l_neg = q @ n.T
  logits = jnp.concatenate([l_pos, l_neg], axis=1) / temperature
  return info_nce(logits, jnp.zeros(q.shape[0], jnp.int32))


def info_nce_queue(q, k, queue, temperature: float = 0.07):
  r"""InfoNCE with a queue of negatives (MoCo v1/v2).

  He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020, Eq. (1)
  (the InfoNCE of Oord et al. 2018). With an L2-normalised query :math:`q`, its positive key
  :math:`k_+` (the other view through the momentum encoder) and the K queued keys
  :math:`\{k_j\}` of earlier batches as negatives,

  .. math::
     \mathcal{L}_q = -\log \frac{\exp(q \cdot k_+ / \tau)}
                                {\exp(q \cdot k_+ / \tau) + \sum_{j=1}^{K} \exp(q \cdot k_j / \tau)},

  averaged over the N queries (a (K+1)-way cross-entropy whose label is 0).

  Args:
    q: (N, D) queries (normalised here).
    k: (N, D) positive keys, row n for query n (normalised here; the caller stops their gradient).
    queue: (K, D) negative keys (normalised here; stored normalised by MoCo).
    temperature: tau.

  Returns:
    (loss, accuracy): accuracy is the fraction of queries whose positive beats every negative.
  """
  return info_nce_with_negatives(q, k, queue, temperature)


def memory_bank_info_nce(queries, positives, negatives, temperature: float = 0.07):
  r"""InfoNCE of queries against their memory-bank positives and shared memory-bank negatives.

  The contrastive loss of PIRL (Misra & van der Maaten, "Self-Supervised Learning of
  Pretext-Invariant Representations", CVPR 2020, Eq. 5) in its softmax form (van den Oord et al.
  2018; as in PyContrast's PIRL): with cosine similarity :math:`s`, the query :math:`q_i`, its
  memory-bank row :math:`m_i` and M negatives :math:`m'_k` drawn from the bank,

  .. math::
     \ell_i = -\log \frac{e^{s(q_i, m_i)/\tau}}{e^{s(q_i, m_i)/\tau}
              + \sum_{k=1}^{M} e^{s(q_i, m'_k)/\tau}}, \qquad
     \mathcal{L} = \frac1N \sum_i \ell_i .

  Args:
    queries: (N, D); positives: (N, D); negatives: (M, D) (all L2-normalised here).
    temperature: tau.

  Returns:
    (loss, accuracy): accuracy = fraction of queries whose positive beats every negative.
  """
  return info_nce_with_negatives(queries, positives, negatives, temperature)


def in_batch_info_nce(q, k, temperature: float):
  r"""InfoNCE with in-batch negatives: query :math:`q_n` against every key of the (global) batch,
  its positive being :math:`k_n`; logits :math:`\bar q \bar k^\top / \tau` (both L2-normalised),
  labels :math:`0, \dots, N - 1`. MoCo v3 (:func:`moco_v3_contrastive`) and NNCLR
  (:func:`nnclr_contrastive`) are this with their own queries and keys. Returns (loss, accuracy).
  """
  q, k = l2_normalize(q), l2_normalize(k)
  logits = (q @ k.T) / temperature
  return info_nce(logits, jnp.arange(q.shape[0]))


def moco_v3_contrastive(q, k, temperature: float = 1.0):
  r"""One direction of the MoCo v3 loss: InfoNCE with in-batch negatives, scaled by 2 tau.

  Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021,
  Sec. 3 / Alg. 1. Query :math:`q_n` (online predictor output) has its positive in key :math:`k_n`
  (momentum encoder, the other view) and the other N - 1 keys of the *global* batch as negatives:

  .. math::
     \mathcal{L}(q, k) = 2\tau \cdot \frac{1}{N} \sum_{n=1}^{N}
        -\log \frac{\exp(q_n \cdot k_n / \tau)}{\sum_{m=1}^{N} \exp(q_n \cdot k_m / \tau)} .

  The 2 tau factor is the one of the official code (``contrastive_loss`` returns
  ``CrossEntropyLoss(...) * (2 * self.T)``); it makes the gradient scale independent of tau.

  Args:
    q: (N, D) queries; k: (N, D) keys (the caller stops their gradient). Normalised here.

  Returns:
    (loss, accuracy).
  """
  ce, accuracy = in_batch_info_nce(q, k, temperature)
  return 2.0 * temperature * ce, accuracy


def moco_v3_symmetric(q1, q2, k1, k2, temperature: float = 1.0):
  r"""The symmetrised MoCo v3 loss (Chen et al. 2021, Alg. 1):
  :math:`\mathcal{L} = \mathcal{L}(q_1, k_2) + \mathcal{L}(q_2, k_1)` with
  :func:`moco_v3_contrastive` (each direction carrying the 2 tau factor). Returns (loss, accuracy)
  with the accuracy averaged over both directions."""
  l12, a12 = moco_v3_contrastive(q1, k2, temperature)
  l21, a21 = moco_v3_contrastive(q2, k1, temperature)
  return l12 + l21, (a12 + a21) / 2


def nearest_neighbour(z, support):
  r"""NNCLR's support-set lookup (Dwibedi et al. 2021, Eq. 3):
  :math:`\mathrm{NN}(z, Q) = \arg\min_{q \in Q} \lVert \bar z - \bar q \rVert_2`, i.e. the support
  row of largest cosine similarity. Returns (N, D) normalised neighbours (no gradient flows to the
  support set) and their (N,) indices in ``support``."""
  z, support = l2_normalize(z), l2_normalize(support)
  idx = jnp.argmax(z @ support.T, axis=-1)
  return jax.lax.stop_gradient(support[idx]), idx


def nnclr_contrastive(nn, p, temperature: float = 0.1):
  r"""One direction of the NNCLR loss: the nearest neighbour as the positive.

  Dwibedi et al., "With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of
  Visual Representations", ICCV 2021, Eq. (2). With :math:`\mathrm{NN}(z_i, Q)` the support-set
  neighbour of view 1's embedding of image i and :math:`z_k^+` (here the predictor outputs
  :math:`p_k^+`, Sec. 3.2) view 2's embeddings of the n images of the global batch,

  .. math::
     \mathcal{L}_i = -\log \frac{\exp(\mathrm{NN}(z_i, Q) \cdot z_i^+ / \tau)}
                                {\sum_{k=1}^{n} \exp(\mathrm{NN}(z_i, Q) \cdot z_k^+ / \tau)},

  averaged over i. All vectors are L2-normalised. Returns (loss, accuracy).
  """
  return in_batch_info_nce(nn, p, temperature)


def nnclr_symmetric(z1, z2, p1, p2, support, temperature: float = 0.1):
  r"""The symmetrised NNCLR loss (Dwibedi et al. 2021, Sec. 3.2):
  :math:`\tfrac12[\mathcal{L}(\mathrm{NN}(z_1, Q), p_2) + \mathcal{L}(\mathrm{NN}(z_2, Q), p_1)]`
  with :func:`nnclr_contrastive`. Returns (loss, accuracy)."""
  nn1, _ = nearest_neighbour(z1, support)
  nn2, _ = nearest_neighbour(z2, support)
  l1, a1 = nnclr_contrastive(nn1, p2, temperature)
  l2, a2 = nnclr_contrastive(nn2, p1, temperature)
  return (l1 + l2) / 2, (a1 + a2) / 2
