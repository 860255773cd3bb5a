"""Joint-embedding predictive objectives: LeJEPA's SIGReg and multi-view prediction loss."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def epps_pulley_grid(t_max: float = 3.0, knots: int = 17):
  r"""Quadrature nodes ``t`` (knots,) on [0, t_max] and weights ``w`` (knots,) for
  :math:`\int_{-\infty}^{\infty} f(t) e^{-t^2/2} dt` of an even ``f``: the trapezoid rule on
  [0, t_max] doubled (dt at the ends, 2 dt inside), times the Gaussian weight. The integrand of
  the Epps-Pulley statistic is even (the empirical characteristic function of real samples is
  Hermitian), so this is the [-t_max, t_max] integral at half the nodes, as the official LeJEPA
  code (``lejepa.univariate.EppsPulley``, defaults t_max 3, 17 knots)."""
  if knots < 2 or t_max <= 0:
    raise ValueError(f'epps_pulley_grid(t_max={t_max}, knots={knots}) needs t_max > 0 and '
                     'knots >= 2')
  t = np.linspace(0.0, t_max, knots)
  dt = t_max / (knots - 1)
  w = np.full((knots,), 2.0 * dt)
  w[[0, -1]] = dt
  return jnp.asarray(t, jnp.float32), jnp.asarray(w * np.exp(-0.5 * t ** 2), jnp.float32)


def epps_pulley(x, t_max: float = 3.0, knots: int = 17):
  r"""Epps-Pulley goodness-of-fit statistic of the samples ``x`` against N(0, 1), per column
  (Epps & Pulley 1983; LeJEPA, Balestriero & LeCun 2025, Sec. 4.3):

  .. math::
     EP(x) = N \int |\hat\varphi_x(t) - e^{-t^2/2}|^2 e^{-t^2/2} dt, \qquad
     \hat\varphi_x(t) = \frac1N \sum_n e^{i t x_n},

  with :math:`|\hat\varphi - \varphi|^2 = (\overline{\cos(t x)} - e^{-t^2/2})^2 +
  \overline{\sin(t x)}^2`, integrated with ``epps_pulley_grid``. ~0 (order 1 / N fluctuations
  times N, i.e. O(1)) for Gaussian samples, large (order N) for others: a collapsed column (all
  x equal) gives N times a constant. Bounded in x with bounded gradients, the paper's stability
  argument.

  The means run over axis 0, the *global* batch when ``x`` is a sharded jax.Array under jit, and
  N is the global batch size: the statistic (and so its gradient) is that of the whole batch on
  any number of devices, with no hand-written all-reduce (the DDP bug this avoids: per-device
  statistics, or an all-reduce without its backward).

  Args:
    x: (N, M) samples, one 1-D sample set per column.
    t_max, knots: the quadrature grid.

  Returns:
    (M,) statistics.
  """
  t, w = epps_pulley_grid(t_max, knots)
  xt = x.astype(jnp.float32)[..., None] * t                      # (N, M, T)
  err = (jnp.mean(jnp.cos(xt), axis=0) - jnp.exp(-0.5 * t ** 2)) ** 2 \
      + jnp.mean(jnp.sin(xt), axis=0) ** 2                       # (M, T)
  return (err @ w) * x.shape[0]


def random_directions(rng, dim: int, num_slices: int):
  """(dim, num_slices) unit columns, Gaussian then normalised: uniform directions on the sphere.
  Drawn from ``rng`` (the step's key, the same on every device), so every device projects on the
  same directions, resampled every step (LeJEPA's slice sampling synced across devices)."""
  a = jax.random.normal(rng, (dim, num_slices), jnp.float32)
  return a / jnp.linalg.norm(a, axis=0, keepdims=True)


def sigreg(z, rng, num_slices: int = 1024, t_max: float = 3.0, knots: int = 17):
  r"""SIGReg, the sketched isotropic-Gaussian regulariser of LeJEPA (Balestriero & LeCun,
  "LeJEPA: Provable and Scalable Self-Supervised Learning Without the Heuristics", 2025, Sec. 4):

  .. math::
     \mathrm{SIGReg}(Z) = \frac1M \sum_{m=1}^{M} EP(Z a_m), \qquad a_m \sim U(S^{K-1}),

  the Epps-Pulley statistic (``epps_pulley``) of the embeddings projected on M random unit
  directions (Cramer-Wold: all 1-D marginals N(0, 1) <=> Z ~ N(0, I)).

  Args:
    z: (N, K) embeddings of one view over the global batch.
    rng: key of the directions (identical on every device).
    num_slices: M.
    t_max, knots: the quadrature grid.
  """
  a = random_directions(rng, z.shape[-1], num_slices)
  return jnp.mean(epps_pulley(z.astype(jnp.float32) @ a, t_max, knots))


def lejepa_loss(z, num_global: int, rng, lambd: float, num_slices: int = 1024,
                t_max: float = 3.0, knots: int = 17):
  r"""LeJEPA objective (Balestriero & LeCun 2025, Algorithm 1 and the official MINIMAL example):

  .. math::
     \mathcal{L} = (1 - \lambda)\,\frac{1}{V B K} \sum_{v, b} \|\mu_b - z_{v,b}\|^2
                 + \lambda\,\frac1V \sum_v \mathrm{SIGReg}(z_v), \qquad
     \mu_b = \frac{1}{V_g} \sum_{g < V_g} z_{g,b},

  every view's embedding predicts the mean of the global views' embeddings (no stop-gradient,
  no teacher), and SIGReg is computed per view over the global batch with the same directions
  for every view, then averaged over views.

  Args:
    z: (V, B, K) projector outputs, the ``num_global`` global views first.
    num_global: V_g.
    rng: key of SIGReg's directions.
    lambd: lambda.
    num_slices, t_max, knots: SIGReg's M and quadrature grid.

  Returns:
    (loss, aux) with aux = {'prediction': ..., 'sigreg': ...}.
  """
  z = z.astype(jnp.float32)
  centers = jnp.mean(z[:num_global], axis=0)
  pred = jnp.mean((centers[None] - z) ** 2)
  reg = jnp.mean(jax.vmap(lambda zv: sigreg(zv, rng, num_slices, t_max, knots))(z))
  return (1.0 - lambd) * pred + lambd * reg, {'prediction': pred, 'sigreg': reg}
