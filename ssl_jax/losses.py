"""Self-supervised losses as pure functions of arrays.

Every function here is jittable, takes global-batch arrays (under ``jax.jit`` with a sharded batch
the reductions are global, so negatives come from every device), and documents the formula of the
paper it implements. No parameters, no state.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x, axis=-1, eps=1e-12):
  """x / max(||x||_2, eps) along ``axis`` (the normalisation used by torch.nn.functional.normalize)."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


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
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  loss = -jnp.mean(jnp.take_along_axis(log_prob, positives[:, None], axis=-1))
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == positives)
  return loss, accuracy


# -- pretext tasks & hybrids (issue 7) ------------------------------------------------------------

def pretext_cross_entropy(logits, labels, weights=None):
  r"""Cross-entropy of a pretext classification task, shared by rotation prediction, jigsaw and
  CutPaste:

  * RotNet (Gidaris et al., "Unsupervised Representation Learning by Predicting Image Rotations",
    ICLR 2018, Eq. 1-2): the K = 4 rotations :math:`g(X|y)`, :math:`y \in \{0, 90, 180, 270\}`
    of every image, :math:`\mathcal{L} = -\frac{1}{K}\sum_y \log F^y(g(X|y))`;
  * Jigsaw (Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw
    Puzzles", ECCV 2016): the index of the permutation (out of a fixed set) applied to the tiles;
  * CutPaste (Li et al., "CutPaste: Self-Supervised Learning for Anomaly Detection and
    Localization", CVPR 2021, Eq. 1-2): 3-way {normal, CutPaste, CutPaste-scar}.

  .. math::
     \mathcal{L} = \frac{\sum_i w_i \, (-\log \operatorname{softmax}(\ell_i)_{y_i})}{\sum_i w_i}

  Args:
    logits: (N, C).
    labels: (N,) int class indices.
    weights: optional (N,) non-negative example weights (default 1).

  Returns:
    (loss, accuracy) with accuracy the (weighted) fraction of argmax hits.
  """
  logits = logits.astype(jnp.float32)
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_prob, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
  hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  if weights is None:
    return jnp.mean(nll), jnp.mean(hit)
  w = weights.astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(w), 1e-12)
  return jnp.sum(w * nll) / denom, jnp.sum(w * hit) / denom


def uncertainty_weighted_sum(task_losses, log_vars, classification=None):
  r"""Multi-task loss with learned homoscedastic-uncertainty weights.

  Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
  Geometry and Semantics", CVPR 2018, Eqs. 7 and 10 (as used by SiT, Atito et al. 2021,
  Sec. 3.4), with the numerically stable parametrisation :math:`s_i = \log \sigma_i^2`. A
  regression task (Gaussian likelihood, Eq. 7) enters as
  :math:`\frac{1}{2\sigma_i^2}\mathcal{L}_i + \log\sigma_i`, a classification task
  (softmax likelihood, Eq. 10) as :math:`\frac{1}{\sigma_i^2}\mathcal{L}_i + \log\sigma_i`:

  .. math::
     \mathcal{L} = \sum_i c_i e^{-s_i} \mathcal{L}_i + \tfrac12 s_i ,\qquad
     c_i = \tfrac12 \text{ (regression)},\; 1 \text{ (classification)}.

  For fixed :math:`\mathcal{L}_i` the minimiser is :math:`s_i = \log (2 c_i \mathcal{L}_i)`: a
  task with a larger loss gets a smaller weight :math:`c_i e^{-s_i}` (SiT's official code uses
  the classification form for its rotation and contrastive losses, the regression form for L1).

  Args:
    task_losses: (T,) the task losses.
    log_vars: (T,) the learned :math:`s_i`.
    classification: optional (T,) bools, True where task i is a classification (cross-entropy)
      loss; default all regression.

  Returns:
    (total, weights) with weights :math:`c_i e^{-s_i}` (T,), for logging.
  """
  task_losses = jnp.asarray(task_losses, jnp.float32)
  log_vars = jnp.asarray(log_vars, jnp.float32)
  if classification is None:
    coeff = jnp.full(task_losses.shape, 0.5, jnp.float32)
  else:
    classification = tuple(bool(x) for x in classification)
    if len(classification) != task_losses.shape[0]:
      raise ValueError(f'classification has {len(classification)} entries for '
                       f'{task_losses.shape[0]} task losses')
    coeff = jnp.asarray([1.0 if c else 0.5 for c in classification], jnp.float32)
  weights = coeff * jnp.exp(-log_vars)
  return jnp.sum(weights * task_losses + 0.5 * log_vars), weights


# ------------------------------------------------------------------ masked image modelling


def _masked_mean(per_patch, mask, eps=0.0):
  """sum(per_patch * mask) / (sum(mask) + eps) over every (batch, patch) position."""
  mask = mask.astype(jnp.float32)
  return jnp.sum(per_patch * mask) / (jnp.sum(mask) + eps)


def mae_loss(pred, target, mask, norm_pix_loss: bool = False, eps: float = 1e-6):
  r"""MAE reconstruction loss: mean squared error on the masked patches only.

  He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, Sec. 3. With patch
  targets :math:`x_{n} \in \mathbb{R}^{p^2 C}` (optionally normalised per patch, ``norm_pix_loss``:
  :math:`\hat x_n = (x_n - \mu_n) / \sqrt{\sigma^2_n + 10^{-6}}` with the mean and *unbiased*
  variance over the patch's pixels, as MAE's code), predictions :math:`y_n` and mask
  :math:`m_n \in \{0, 1\}` (1 = removed),

  .. math::
     \mathcal{L} = \frac{\sum_{b,n} m_{bn} \, \tfrac{1}{p^2 C}\lVert y_{bn} - \hat x_{bn}\rVert^2}
                        {\sum_{b,n} m_{bn}} .

  Args:
    pred: (B, N, p*p*C) predicted pixels of every patch (visible ones are ignored).
    target: (B, N, p*p*C) patchified input images.
    mask: (B, N), 1 = masked.
  Returns:
    the scalar loss.
  """
  target = target.astype(jnp.float32)
  if norm_pix_loss:
    mean = target.mean(axis=-1, keepdims=True)
    var = target.var(axis=-1, keepdims=True, ddof=1)
    target = (target - mean) / jnp.sqrt(var + eps)
  per_patch = jnp.mean((pred.astype(jnp.float32) - target) ** 2, axis=-1)
  return _masked_mean(per_patch, mask)


def simmim_l1_loss(pred, target, mask, eps: float = 1e-5):
  r"""SimMIM reconstruction loss: L1 on the masked pixels only.

  Xie et al., "SimMIM: A Simple Framework for Masked Image Modeling", CVPR 2022, Eq. (1):

  .. math::
     \mathcal{L} = \frac{1}{\Omega(x_M)} \lVert y_M - x_M \rVert_1

  where :math:`x_M, y_M` are the input and predicted values of the masked pixels and
  :math:`\Omega(x_M)` their number (pixels x channels). In patch form, with mask
  :math:`m_{bn}` (1 = masked): :math:`\sum_{b,n} m_{bn} \lVert y_{bn} - x_{bn}\rVert_1 /
  (p^2 C (\sum m + \epsilon))`, the ``eps = 1e-5`` of SimMIM's code.

  Args:
    pred, target: (B, N, p*p*C) patch pixels.
    mask: (B, N), 1 = masked.
  """
  return simmim_loss(pred, target, mask, 'l1', eps)


SIMMIM_LOSSES = ('l1', 'smooth_l1', 'l2')


def simmim_loss(pred, target, mask, kind: str = 'l1', eps: float = 1e-5):
  r"""SimMIM's masked-pixel regression loss with the per-pixel penalty of the paper's loss
  ablation (Xie et al. 2022, Sec. 4.1: l1, smooth-l1 and l2 come out close after fine-tuning,
  l1 the default):

  .. math::
     \mathcal{L} = rac{1}{\Omega(x_M)} \sum_{i \in M} ho(y_i - x_i), \quad
     ho_{l1}(d) = |d|, \quad ho_{l2}(d) = d^2, \quad
     ho_{smooth\,l1}(d) = egin{cases} d^2 / 2 & |d| < 1 \ |d| - 1/2 & 	ext{else}\end{cases}

  (smooth-l1 with ``beta = 1``, PyTorch's default). Normalised as :func:`simmim_l1_loss`.
  Under uncertainty l1 is minimised by the median of the plausible pixel values and l2 by their
  mean: on sparse strokes (MNIST) the median of an unsure pixel is the background.

  Args:
    pred, target: (B, N, p*p*C) patch pixels.
    mask: (B, N), 1 = masked.
    kind: one of ``SIMMIM_LOSSES``.
  """
  d = pred.astype(jnp.float32) - target.astype(jnp.float32)
  if kind == 'l1':
    rho = jnp.abs(d)
  elif kind == 'l2':
    rho = d * d
  elif kind == 'smooth_l1':
    a = jnp.abs(d)
    rho = jnp.where(a < 1.0, 0.5 * d * d, a - 0.5)
  else:
    raise ValueError(f'SimMIM loss {kind!r} is not one of {SIMMIM_LOSSES}')
  return _masked_mean(jnp.mean(rho, axis=-1), mask, eps)


def local_norm_targets(images, window: int, eps: float = 1e-6):
  r"""SimMIM's normalised pixel targets (the official repo's ``norm_targets``, used with a
  47-px window in Xie et al., "On Data Scaling in Masked Image Modeling", CVPR 2023): every
  pixel is standardised by the mean and (unbiased) variance of its ``window x window``
  neighbourhood, per channel, borders counting only the in-image pixels:

  .. math::
     \hat x = (x - \mu_w) / \sqrt{\max(\tfrac{n}{n - 1}(\overline{x^2}_w - \mu_w^2), 0)
                                    + 10^{-6}}

  with :math:`n` the number of in-image pixels of the window.

  Args:
    images: (B, H, W, C) float images; window: odd window side in pixels.
  """
  if window % 2 != 1:
    raise ValueError(f'local_norm_targets: window must be odd, got {window}')
  x = images.astype(jnp.float32)
  pad = window // 2

  def box_sum(y):
    y = jnp.pad(y, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return jax.lax.reduce_window(y, 0.0, jax.lax.add, (1, window, window, 1), (1, 1, 1, 1),
                                 'VALID')

  count = box_sum(jnp.ones((1,) + x.shape[1:3] + (1,), jnp.float32))   # same for every image
  mean = box_sum(x) / count
  var = (box_sum(x * x) / count - mean ** 2) * (count / (count - 1))
  return (x - mean) / jnp.sqrt(jnp.maximum(var, 0.0) + eps)


def masked_cross_entropy(logits, labels, mask):
  r"""BEiT's masked image modelling loss: cross-entropy of the visual-token index of each masked
  patch.

  Bao et al., "BEiT: BERT Pre-Training of Image Transformers", ICLR 2022, Eq. (1): with visual
  tokens :math:`z_i` of the tokenizer and masked positions :math:`\mathcal{M}`,

  .. math::
     \mathcal{L} = -\frac{1}{\sum_b |\mathcal{M}_b|} \sum_b \sum_{i \in \mathcal{M}_b}
                   \log \operatorname{softmax}(W h_i^L + b)_{z_i} .

  Args:
    logits: (B, N, V) predictions for every patch; labels: (B, N) int code indices;
    mask: (B, N), 1 = masked.
  Returns:
    (loss, accuracy over the masked patches).
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return _masked_mean(nll, mask), _masked_mean(correct, mask)


def straight_through(z_e, z_q):
  r"""Straight-through estimator of VQ-VAE: forward value :math:`z_q`, gradient copied to
  :math:`z_e` (van den Oord et al. 2017, Sec. 3.2): :math:`z_e + \mathrm{sg}[z_q - z_e]`."""
  return z_e + jax.lax.stop_gradient(z_q - z_e)


def vq_vae_loss(x, x_rec, z_e, z_q, beta: float = 0.25):
  r"""VQ-VAE objective (van den Oord et al., "Neural Discrete Representation Learning", NeurIPS
  2017, Eq. (3)):

  .. math::
     \mathcal{L} = \underbrace{\lVert x - D(z_e + \mathrm{sg}[e - z_e]) \rVert^2}_{\text{reconstruction}}
       + \underbrace{\lVert \mathrm{sg}[z_e(x)] - e \rVert^2}_{\text{codebook}}
       + \beta \underbrace{\lVert z_e(x) - \mathrm{sg}[e] \rVert^2}_{\text{commitment}}

  where :math:`e` is the nearest codebook vector of each encoder output. Each term is a mean over
  elements (the reconstruction stands for :math:`-\log p(x \mid z_q)` under a fixed-variance
  Gaussian). ``x_rec`` must already come from the straight-through quantised code
  (:func:`straight_through`), so the reconstruction gradient reaches the encoder; the codebook term
  moves only the codebook and the commitment term only the encoder.

  Args:
    x, x_rec: images and reconstructions, same shape.
    z_e: (..., D) encoder outputs; z_q: (..., D) their nearest codebook vectors (not stopped).
    beta: commitment weight (0.25 in the paper).
  Returns:
    (loss, {'recon': ..., 'codebook': ..., 'commitment': ...}).
  """
  sg = jax.lax.stop_gradient
  z_e, z_q = z_e.astype(jnp.float32), z_q.astype(jnp.float32)
  recon = jnp.mean((x.astype(jnp.float32) - x_rec.astype(jnp.float32)) ** 2)
  codebook = jnp.mean((sg(z_e) - z_q) ** 2)
  commitment = jnp.mean((z_e - sg(z_q)) ** 2)
  total = recon + codebook + beta * commitment
  return total, {'recon': recon, 'codebook': codebook, 'commitment': commitment}


def _off_diagonal(m):
  """The off-diagonal entries of a square matrix, as a mask-multiplied copy (zeros on the diagonal)."""
  return m * (1.0 - jnp.eye(m.shape[0], dtype=m.dtype))


def barlow_twins(z1, z2, lambd: float = 0.0051, eps: float = 1e-5):
  r"""Barlow Twins redundancy-reduction loss.

  Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML 2021,
  Eq. (1)-(2). Each embedding dimension is standardised over the batch (BatchNorm without affine
  parameters: batch mean, biased batch variance, ``eps`` as ``torch.nn.BatchNorm1d``), then

  .. math::
     \mathcal{C}_{ij} = \frac{1}{N}\sum_b \hat z^A_{b,i} \hat z^B_{b,j}, \qquad
     \mathcal{L}_{BT} = \sum_i (1 - \mathcal{C}_{ii})^2
                        + \lambda \sum_i \sum_{j \ne i} \mathcal{C}_{ij}^2 .

  The batch statistics and the sum over ``b`` run over the *global* batch (under jit with a sharded
  batch: every device's rows), as the official code's all_reduce of ``c``.

  Args:
    z1, z2: (N, D) projector outputs of the two views (row n of each from the same image).
    lambd: lambda, the off-diagonal weight (paper: 5e-3 for D = 8192; official code 0.0051).
    eps: BatchNorm epsilon.

  Returns:
    (loss, aux) with aux = {'on_diag', 'off_diag'} (the two sums, before lambda).
  """
  def bn(z):
    z = z.astype(jnp.float32)
    mu = jnp.mean(z, axis=0)
    var = jnp.mean(jnp.square(z - mu), axis=0)
    return (z - mu) / jnp.sqrt(var + eps)

  n = z1.shape[0]
  c = bn(z1).T @ bn(z2) / n
  on_diag = jnp.sum(jnp.square(jnp.diagonal(c) - 1.0))
  off_diag = jnp.sum(jnp.square(_off_diagonal(c)))
  return on_diag + lambd * off_diag, {'on_diag': on_diag, 'off_diag': off_diag}


def vicreg(z1, z2, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0,
           eps: float = 1e-4, gamma: float = 1.0):
  r"""VICReg: variance-invariance-covariance regularisation.

  Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
  Self-Supervised Learning", ICLR 2022, Eq. (1)-(6), as the official code (facebookresearch/vicreg
  main_vicreg.py) computes them, over the *global* batch of N embeddings of dimension d:

  .. math::
     s(Z, Z') = \frac{1}{N d} \sum_b \lVert z_b - z'_b \rVert_2^2, \qquad
     v(Z) = \frac{1}{d} \sum_j \max\!\big(0, \gamma - \sqrt{\mathrm{Var}(z^j) + \epsilon}\big),

  .. math::
     C(Z) = \frac{1}{N - 1} \sum_b (z_b - \bar z)(z_b - \bar z)^\top, \qquad
     c(Z) = \frac{1}{d} \sum_{i \ne j} C(Z)_{ij}^2,

  .. math::
     \mathcal{L} = \lambda\, s(Z, Z') + \mu\, \frac{v(Z) + v(Z')}{2} + \nu\, \big(c(Z) + c(Z')\big).

  ``Var`` is the unbiased (N - 1) variance (torch's default). The variance term averages the two
  branches exactly as the official code does (the paper writes the sum; with the defaults
  lambda = mu = 25, nu = 1 the code's weighting is the one the published results use).

  Returns:
    (loss, aux) with aux = {'invariance', 'variance', 'covariance'} (unweighted terms, variance
    already averaged over the two branches, covariance summed).
  """
  z1 = z1.astype(jnp.float32)
  z2 = z2.astype(jnp.float32)
  n, d = z1.shape
  invariance = jnp.mean(jnp.square(z1 - z2))

  def var_cov(z):
    z = z - jnp.mean(z, axis=0)
    std = jnp.sqrt(jnp.sum(jnp.square(z), axis=0) / (n - 1) + eps)
    cov = (z.T @ z) / (n - 1)
    return jnp.mean(jax.nn.relu(gamma - std)), jnp.sum(jnp.square(_off_diagonal(cov))) / d

  v1, c1 = var_cov(z1)
  v2, c2 = var_cov(z2)
  variance = (v1 + v2) / 2
  covariance = c1 + c2
  loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
  return loss, {'invariance': invariance, 'variance': variance, 'covariance': covariance}


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
  logits = logits / temperature
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  loss = -jnp.mean(jnp.take_along_axis(log_prob, index[:, None].astype(jnp.int32), axis=-1))
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == index)
  return loss, accuracy


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
    log_prob = jax.nn.log_softmax(logits, axis=-1)
    nll.append(-jnp.take_along_axis(log_prob, labels[:, None], axis=-1)[:, 0])
    correct.append(jnp.argmax(logits, axis=-1) == labels)
  return jnp.mean(jnp.concatenate(nll)), jnp.mean(jnp.concatenate(correct))


# ------------------------------------------------------------------------------------------------
# Self-distillation: DINO, iBOT, data2vec.
# ------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# MoCo v1/v2/v3, BYOL, SimSiam, NNCLR.
# --------------------------------------------------------------------------------------------------


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
  q, k, queue = l2_normalize(q), l2_normalize(k), l2_normalize(queue)
  l_pos = jnp.sum(q * k, axis=-1, keepdims=True)
  l_neg = q @ queue.T
  logits = jnp.concatenate([l_pos, l_neg], axis=1) / temperature
  loss = -jnp.mean(jax.nn.log_softmax(logits, axis=-1)[:, 0])
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == 0)
  return loss, accuracy


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
  q, k = l2_normalize(q), l2_normalize(k)
  logits = (q @ k.T) / temperature
  labels = jnp.arange(q.shape[0])
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  ce = -jnp.mean(jnp.take_along_axis(log_prob, labels[:, None], axis=-1))
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
  return 2.0 * temperature * ce, accuracy


def moco_v3_symmetric(q1, q2, k1, k2, temperature: float = 1.0):
  r"""The symmetrised MoCo v3 loss (Chen et al. 2021, Alg. 1):
  :math:`\mathcal{L} = \mathcal{L}(q_1, k_2) + \mathcal{L}(q_2, k_1)` with
  :func:`moco_v3_contrastive` (each direction carrying the 2 tau factor). Returns (loss, accuracy)
  with the accuracy averaged over both directions."""
  l12, a12 = moco_v3_contrastive(q1, k2, temperature)
  l21, a21 = moco_v3_contrastive(q2, k1, temperature)
  return l12 + l21, (a12 + a21) / 2


def normalized_mse(p, z):
  r"""BYOL's regression loss: mean squared error of L2-normalised vectors.

  Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, Eq. (2):

  .. math::
     \mathcal{L}_{\theta,\xi} = \lVert \bar q_\theta(z_\theta) - \bar z'_\xi \rVert_2^2
        = 2 - 2 \frac{\langle q_\theta(z_\theta), z'_\xi \rangle}
                     {\lVert q_\theta(z_\theta)\rVert_2 \, \lVert z'_\xi\rVert_2},

  averaged over the batch. BYOL symmetrises it (Eq. 2-3): the method adds the loss with the two
  views swapped. The caller stops the gradient of the target projection ``z``.

  Args:
    p: (N, D) online predictions; z: (N, D) target projections.
  """
  p, z = l2_normalize(p), l2_normalize(z)
  return jnp.mean(jnp.sum((p - z) ** 2, axis=-1))


def negative_cosine(p, z):
  r"""SimSiam's negative cosine similarity.

  Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, Eq. (1):

  .. math::
     \mathcal{D}(p_1, z_2) = -\frac{p_1}{\lVert p_1\rVert_2} \cdot \frac{z_2}{\lVert z_2\rVert_2},

  averaged over the batch; the symmetric loss (Eq. 2-3) is
  :math:`\mathcal{L} = \tfrac12 \mathcal{D}(p_1, \mathrm{stopgrad}(z_2)) +
  \tfrac12 \mathcal{D}(p_2, \mathrm{stopgrad}(z_1))`, assembled by the method, which applies the
  stop-gradient.
  """
  p, z = l2_normalize(p), l2_normalize(z)
  return -jnp.mean(jnp.sum(p * z, axis=-1))


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
  nn, p = l2_normalize(nn), l2_normalize(p)
  logits = (nn @ p.T) / temperature
  labels = jnp.arange(nn.shape[0])
  log_prob = jax.nn.log_softmax(logits, axis=-1)
  loss = -jnp.mean(jnp.take_along_axis(log_prob, labels[:, None], axis=-1))
  return loss, jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def nnclr_symmetric(z1, z2, p1, p2, support, temperature: float = 0.1):
  r"""The symmetrised NNCLR loss (Dwibedi et al. 2021, Sec. 3.2):
  :math:`\tfrac12[\mathcal{L}(\mathrm{NN}(z_1, Q), p_2) + \mathcal{L}(\mathrm{NN}(z_2, Q), p_1)]`
  with :func:`nnclr_contrastive`. Returns (loss, accuracy)."""
  nn1, _ = nearest_neighbour(z1, support)
  nn2, _ = nearest_neighbour(z2, support)
  l1, a1 = nnclr_contrastive(nn1, p2, temperature)
  l2, a2 = nnclr_contrastive(nn2, p1, temperature)
  return (l1 + l2) / 2, (a1 + a2) / 2


def colorization_rebalanced_ce(logits, soft_targets, pixel_weights):
  r"""Class-rebalanced multinomial cross-entropy of colorization.

  Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016, Eq. 2: with the soft-encoded
  ground truth :math:`Z_{h,w,q}` over the Q quantised ab bins, the predicted distribution
  :math:`\hat Z = \operatorname{softmax}(\text{logits})` and the rebalancing weight
  :math:`v(Z_{h,w}) = w_{q^*}`, :math:`q^* = \arg\max_q Z_{h,w,q}` (Eq. 3-4),

  .. math::
     \mathcal{L} = -\frac{1}{B H W} \sum_{b,h,w} v(Z_{b,h,w}) \sum_q Z_{b,h,w,q}
                   \log \hat Z_{b,h,w,q} .

  Args:
    logits: (B, H, W, Q).
    soft_targets: (B, H, W, Q), rows sum to 1.
    pixel_weights: (B, H, W) the weights v(Z).
  """
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  per_pixel = -jnp.sum(soft_targets.astype(jnp.float32) * log_p, axis=-1)
  return jnp.mean(pixel_weights.astype(jnp.float32) * per_pixel)


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
  q, p, n = l2_normalize(queries), l2_normalize(positives), l2_normalize(negatives)
  pos = jnp.sum(q * p, axis=-1, keepdims=True) / temperature
  neg = (q @ n.T) / temperature
  logits = jnp.concatenate([pos, neg], axis=1)
  loss = -jnp.mean(jax.nn.log_softmax(logits, axis=-1)[:, 0])
  return loss, jnp.mean(jnp.argmax(logits, axis=-1) == 0)


# --------------------------------------------------------------------------------------------------
# CMAE: masked reconstruction + momentum contrastive.
# --------------------------------------------------------------------------------------------------


def cmae_loss(pred_pixels, target_patches, mask, prediction, target_projection,
              temperature: float = 0.07, contrastive_weight: float = 1.0,
              norm_pix_loss: bool = True):
  r"""CMAE's objective: MAE reconstruction plus an InfoNCE between the online branch's prediction
  and the momentum branch's projection.

  Huang et al., "Contrastive Masked Autoencoders are Stronger Vision Learners", TPAMI 2023
  (arXiv 2207.13532), Sec. 3: :math:`\mathcal{L} = \mathcal{L}_r + \lambda_c \mathcal{L}_c`.

  * :math:`\mathcal{L}_r` is :func:`mae_loss`: the mean squared error on the masked patches
    (:math:`m_{bn} = 1`) of the *source* view, against per-patch normalised pixels when
    ``norm_pix_loss``,

    .. math::
       \mathcal{L}_r = \frac{\sum_{b,n} m_{bn} \, \tfrac{1}{p^2 C}\lVert y_{bn} - \hat x_{bn}\rVert^2}
                            {\sum_{b,n} m_{bn}} .

  * :math:`\mathcal{L}_c` is the InfoNCE of the online prediction :math:`q_i` (feature decoder ->
    mean pool -> projector -> predictor) against the momentum projection :math:`k_i` of the
    shifted, colour-augmented target view of the same image, the other N - 1 projections of the
    *global* batch being the negatives; both are L2-normalised and :math:`k` carries no gradient:

    .. math::
       \mathcal{L}_c = 2\tau \cdot \frac{1}{N} \sum_{i=1}^{N}
          -\log \frac{\exp(\bar q_i \cdot \bar k_i / \tau)}
                     {\sum_{j=1}^{N} \exp(\bar q_i \cdot \bar k_j / \tau)} .

    The :math:`2\tau` factor is the official code's (``CMAEPretrainHead``: ``2 * t *
    CrossEntropyLoss(score, label)``, taken from MoCo v3), i.e. :func:`moco_v3_contrastive`.

  Args:
    pred_pixels: (B, N, p*p*C) pixel-decoder output for every patch.
    target_patches: (B, N, p*p*C) patchified source image (normalised here if norm_pix_loss).
    mask: (B, N), 1 = masked.
    prediction: (B, D) online predictor output.
    target_projection: (B, D) momentum projection (its gradient is stopped here).
    temperature: tau (0.07 in the paper).
    contrastive_weight: lambda_c (the official configs' ``ct_weight = 1.0``).
    norm_pix_loss: per-patch normalised pixel targets (True in the paper).

  Returns:
    (loss, {'loss_recon', 'loss_contrastive', 'contrastive_acc'}); loss = loss_recon +
    contrastive_weight * loss_contrastive.
  """
  rec = mae_loss(pred_pixels, target_patches, mask, norm_pix_loss)
  con, acc = moco_v3_contrastive(prediction, jax.lax.stop_gradient(target_projection),
                                 temperature)
  total = rec + contrastive_weight * con
  return total, {'loss_recon': rec, 'loss_contrastive': con, 'contrastive_acc': acc}
