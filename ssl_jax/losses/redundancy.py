"""Redundancy reduction and variance-covariance regularisation: Barlow Twins, VICReg."""
from __future__ import annotations

import jax
import jax.numpy as jnp


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
