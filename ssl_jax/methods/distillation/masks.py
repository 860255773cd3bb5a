"""Block-wise patch masks drawn on device from a bank precomputed on the host.

BEiT's block-wise masking (Bao et al. 2022, Algorithm 1; ``data/masking.blockwise_mask``) has a
data-dependent rejection loop, so BEiT and iBOT run it in the data loader. Here the host draws a
bank of ``size`` masks once (numpy, seeded from the config), and the jitted step picks one per
image at random and applies one of the 8 symmetries of the square grid (flips and transposition,
which preserve the distribution because the aspect range is symmetric). The masks therefore
follow BEiT's distribution exactly, the step stays a pure function of (state, batch, key), and
no change to the host pipeline is needed; with the default 4,096 masks x 8 symmetries repeats
are rare enough for these methods.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.data import masking


class BlockMaskBank:
  """A bank of BEiT block-wise masks for a square ``grid`` x ``grid`` patch grid.

  Each bank entry masks ``round(r * N)`` patches with ``r ~ U(ratio_range)`` (iBOT's
  ``pred_ratio +- pred_ratio_var``; data2vec's fixed 0.6 with ``ratio_range=(0.6, 0.6)``).
  ``mask_prob`` is the probability that an image is masked at all (iBOT masks half the images:
  ``--pred_ratio 0 0.3``); unmasked images get an all-False mask.
  """

  def __init__(self, grid: int, ratio_range, *, size: int = 4096, seed: int = 0,
               min_num_patches: int | None = None, mask_prob: float = 1.0):
    n = grid * grid
    lo, hi = ratio_range
    if not 0.0 <= lo <= hi < 1.0:
      raise ValueError(f'mask ratio range must satisfy 0 <= min <= max < 1, got {ratio_range}')
    if min_num_patches is None:
      min_num_patches = max(1, (grid // 3) ** 2)  # iBOT: (min(H, W) // 3) ** 2, 16 at 14x14
    rng = np.random.default_rng(seed)
    bank = [masking.blockwise_mask(rng, grid, grid, int(round(rng.uniform(lo, hi) * n)),
                                   min_num_patches=min_num_patches) for _ in range(size)]
    self.grid = grid
    self.mask_prob = float(mask_prob)
    self.bank = np.stack(bank).astype(bool)  # (size, grid, grid)

  def sample(self, rng, batch: int):
    """(batch, N) bool masks, True = masked; jittable."""
    k_idx, k_sym, k_on = jax.random.split(rng, 3)
    idx = jax.random.randint(k_idx, (batch,), 0, self.bank.shape[0])
    m = jnp.asarray(self.bank)[idx]
    sym = jax.random.randint(k_sym, (batch,), 0, 8)

    def transform(mm, s):
      mm = jnp.where(s & 1, mm[::-1], mm)
      mm = jnp.where(s & 2, mm[:, ::-1], mm)
      return jnp.where(s & 4, mm.T, mm)

    m = jax.vmap(transform)(m, sym)
    if self.mask_prob < 1.0:
      on = jax.random.bernoulli(k_on, self.mask_prob, (batch,))
      m = m & on[:, None, None]
    return m.reshape(batch, -1)
