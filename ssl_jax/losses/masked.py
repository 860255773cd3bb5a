"""Masked image modelling: MAE, SimMIM, BEiT (masked token cross-entropy) and its VQ tokenizer."""
from __future__ import annotations

import jax
import jax.numpy as jnp


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
     \mathcal{L} = rac{1}{\Omega(x_M)} \sum_{i \in M} 
ho(y_i - x_i), \quad
     
ho_{l1}(d) = |d|, \quad 
ho_{l2}(d) = d^2, \quad
     
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
