"""Patch masks for masked image modelling.

- :func:`random_masking` — per-image uniform random masking by argsort of noise, MAE
  (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022). Pure jnp,
  jittable, explicit key; runs on device inside ``method.views``.
- :func:`blockwise_mask` — block-wise masking, BEiT (Bao et al., "BEiT: BERT Pre-Training of
  Image Transformers", ICLR 2022, Algorithm 1), also used by iBOT. Numpy with an explicit
  ``np.random.Generator``: like BEiT/iBOT it runs host side in the data loader, because its
  rejection loop has a data-dependent trip count.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """K = int(N * (1 - mask_ratio)), the static number of visible patches (MAE)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f'mask_ratio must be in [0, 1), got {mask_ratio}')
    return int(num_patches * (1 - mask_ratio))


def random_masking(rng: jax.Array, batch: int, num_patches: int,
                   mask_ratio: float) -> dict[str, jax.Array]:
    """MAE per-image random masking (He et al. 2022).

    Draw uniform noise per patch, ``ids_shuffle = argsort(noise)``; the first
    K = int(N * (1 - mask_ratio)) shuffled patches are kept. ``batch``, ``num_patches`` and
    ``mask_ratio`` are static Python numbers.

    Returns:
      ids_keep: (B, K) int32, indices of the visible patches (pass to ``ViT.encode``).
      ids_restore: (B, N) int32, ``argsort(ids_shuffle)``; see :func:`unshuffle`.
      mask: (B, N) float32, 1 = masked (removed), 0 = kept, in the original patch order.
    """
    k = num_kept(num_patches, mask_ratio)
    noise = jax.random.uniform(rng, (batch, num_patches))
    ids_shuffle = jnp.argsort(noise, axis=1).astype(jnp.int32)
    ids_restore = jnp.argsort(ids_shuffle, axis=1).astype(jnp.int32)
    return {
        'ids_keep': ids_shuffle[:, :k],
        'ids_restore': ids_restore,
        # Patch j sits at shuffled position ids_restore[j]; it is masked iff that is >= K.
        'mask': (ids_restore >= k).astype(jnp.float32),
    }


def unshuffle(tokens: jax.Array, ids_restore: jax.Array) -> jax.Array:
    """Restore the original patch order (MAE decoder, He et al. 2022).

    ``tokens`` (B, N, ...) is in shuffled order — the K encoded tokens followed by N - K mask
    tokens — and ``ids_restore`` (B, N) is from :func:`random_masking`; returns (B, N, ...)
    with token j at original position j.
    """
    idx = ids_restore.reshape(ids_restore.shape + (1,) * (tokens.ndim - 2))
    return jnp.take_along_axis(tokens, idx, axis=1)


def blockwise_mask(rng: np.random.Generator, grid_h: int, grid_w: int,
                   num_masking_patches: int, min_num_patches: int = 4,
                   max_num_patches: int | None = None, min_aspect: float = 0.3,
                   max_aspect: float | None = None) -> np.ndarray:
    """BEiT block-wise masking (Bao et al. 2022, Algorithm 1; BEiT's ``MaskingGenerator``).

    Repeatedly draw a block with area ``s ~ U[min_num_patches, remaining]`` (capped by
    ``max_num_patches``) and aspect ratio ``r`` log-uniform in [min_aspect, max_aspect]
    (default 1 / min_aspect), ``h = round(sqrt(s r))``, ``w = round(sqrt(s / r))``, at a
    uniform position; a block is accepted only if it adds between 1 and ``remaining`` new
    patches, so the count never exceeds ``num_masking_patches``. Stops when the target is
    reached or 10 attempts in a row add nothing. BEiT uses ``min_num_patches=16`` and 40 % of
    a 14x14 grid (75 patches).

    Returns:
      (grid_h, grid_w) bool, True = masked.
    """
    max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
    max_aspect = max_aspect or 1.0 / min_aspect
    log_aspect = (math.log(min_aspect), math.log(max_aspect))
    mask = np.zeros((grid_h, grid_w), dtype=bool)

    def add_block(max_mask_patches: int) -> int:
        delta = 0
        for _ in range(10):
            # Python's random.uniform semantics (as BEiT): fine when max < min, unlike
            # Generator.uniform, which happens once fewer than min_num_patches remain.
            target_area = min_num_patches + (max_mask_patches - min_num_patches) * rng.random()
            aspect = math.exp(log_aspect[0] + (log_aspect[1] - log_aspect[0]) * rng.random())
            h = int(round(math.sqrt(target_area * aspect)))
            w = int(round(math.sqrt(target_area / aspect)))
            if w < grid_w and h < grid_h:
                top = int(rng.integers(0, grid_h - h + 1))
                left = int(rng.integers(0, grid_w - w + 1))
                window = mask[top:top + h, left:left + w]
                new = h * w - int(window.sum())
                if 0 < new <= max_mask_patches:
                    window[...] = True  # a view: writes into mask
                    delta += new
            if delta > 0:
                break
        return delta

    count = 0
    while count < num_masking_patches:
        delta = add_block(min(num_masking_patches - count, max_num_patches))
        if delta == 0:
            break
        count += delta
    return mask


def blockwise_masks(seed: int | np.random.Generator, batch: int, grid_h: int, grid_w: int,
                    num_masking_patches: int, **kwargs) -> np.ndarray:
    """A batch of independent BEiT block-wise masks (Bao et al. 2022), (B, grid_h, grid_w) bool.

    ``seed`` is an int (a fresh ``np.random.default_rng(seed)``) or a Generator; ``kwargs``
    go to :func:`blockwise_mask`. Reshape to (B, N) for ``ViT.encode(mask=...)``.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return np.stack([blockwise_mask(rng, grid_h, grid_w, num_masking_patches, **kwargs)
                     for _ in range(batch)])
