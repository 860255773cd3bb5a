"""Patch masks for masked image modelling.

- :func:`random_masking` — per-image uniform random masking by argsort of noise, MAE
  (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022). Pure jnp,
  jittable, explicit key; runs on device inside ``method.views``.
- :func:`blockwise_mask` — block-wise masking, BEiT (Bao et al., "BEiT: BERT Pre-Training of
  Image Transformers", ICLR 2022, Algorithm 1), also used by iBOT. Numpy with an explicit
  ``np.random.Generator``: like BEiT/iBOT it runs host side in the data loader, because its
  rejection loop has a data-dependent trip count.
- :class:`BlockMaskBank` — the same BEiT masks drawn on device (iBOT, data2vec): a bank
  precomputed on the host, one entry and one of the grid's 8 symmetries picked per image.
- :func:`multiblock_masks` — I-JEPA's multi-block context / target masks (Assran et al., "Self-
  Supervised Learning from Images with a Joint-Embedding Predictive Architecture", CVPR 2023),
  drawn on device with static token counts; :func:`block_size` and
  :func:`multiblock_token_counts` are its host-side helpers.
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


class BlockMaskBank:
  """A bank of BEiT block-wise masks for a square ``grid`` x ``grid`` patch grid.

  Each bank entry masks ``round(r * N)`` patches with ``r ~ U(ratio_range)`` (iBOT's
  ``pred_ratio +- pred_ratio_var``; data2vec's fixed 0.6 with ``ratio_range=(0.6, 0.6)``).
  ``mask_prob`` is the probability that an image is masked at all (iBOT masks half the images:
  ``--pred_ratio 0 0.3``); unmasked images get an all-False mask.

  The masks are drawn on device from a bank precomputed on the host (moved here from
  methods/distillation/masks.py, so masking has one module). BEiT's block-wise masking
  (Bao et al. 2022, Algorithm 1; :func:`blockwise_mask`) has a
  data-dependent rejection loop, so BEiT and iBOT run it in the data loader. Here the host draws a
  bank of ``size`` masks once (numpy, seeded from the config), and the jitted step picks one per
  image at random and applies one of the 8 symmetries of the square grid (flips and transposition,
  which preserve the distribution because the aspect range is symmetric). The masks therefore
  follow BEiT's distribution exactly, the step stays a pure function of (state, batch, key), and
  no change to the host pipeline is needed; with the default 4,096 masks x 8 symmetries repeats
  are rare enough for these methods.
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
    bank = [blockwise_mask(rng, grid, grid, int(round(rng.uniform(lo, hi) * n)),
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


# ----------------------------------------------------------------------------- I-JEPA multi-block

def block_size(u, grid: int, scale, aspect):
  """I-JEPA's block (h, w) on a ``grid`` x ``grid`` patch grid for one uniform draw ``u``.

  As the official ``MaskCollator._sample_block_size`` (facebookresearch/ijepa,
  src/masks/multiblock.py): *one* draw sets both the scale ``s = s0 + u (s1 - s0)`` and the aspect
  ratio ``r = r0 + u (r1 - r0)``, ``K = floor(N s)``, ``h = round(sqrt(K r))``,
  ``w = round(sqrt(K / r))``, each capped at ``grid - 1``. ``u`` is a Python float (host) or a
  traced scalar (device); both round half to even, as Python's ``round``.
  """
  xp = np if isinstance(u, (float, int, np.floating, np.ndarray)) else jnp
  s = scale[0] + u * (scale[1] - scale[0])
  r = aspect[0] + u * (aspect[1] - aspect[0])
  keep = xp.floor(grid * grid * s)
  h = xp.minimum(xp.round(xp.sqrt(keep * r)), grid - 1).astype(np.int32)
  w = xp.minimum(xp.round(xp.sqrt(keep / r)), grid - 1).astype(np.int32)
  return h, w


def _box(top, left, h, w, grid: int):
  """(grid * grid,) bool, True inside the h x w block at (top, left); all traced scalars."""
  rows = jnp.arange(grid)[:, None]
  cols = jnp.arange(grid)[None, :]
  inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
  return inside.reshape(-1)


def _first_k(mask, k: int):
  """(k,) int32 indices of ``mask``'s True entries in raster order (the official collator's
  ``nonzero`` then ``[:k]``). Where fewer than k are True the list repeats them cyclically, so
  every index still lies inside the mask (static shape, no padding token)."""
  order = jnp.argsort(~mask, stable=True).astype(jnp.int32)   # True entries first, in order
  count = jnp.maximum(jnp.sum(mask), 1)
  return order[jnp.arange(k) % count]


def multiblock_masks(rng, batch: int, grid: int, *, num_targets: int = 4,
                     target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
                     context_scale=(0.85, 1.0), context_aspect=(1.0, 1.0),
                     num_target_tokens: int, num_context_tokens: int):
  """I-JEPA multi-block masks (Assran et al. 2023, Sec. 3; the official ``MaskCollator``), jittable.

  Per batch one target block size and one context block size (:func:`block_size`; the official
  collator draws them once per batch from a shared seed). Per image, ``num_targets`` target
  blocks and one context block at uniform positions ``top ~ U{0, ..., grid - h - 1}`` (the
  official ``randint(0, H - h)``, whose upper end is exclusive); the target blocks are removed
  from the context block. Shapes stay static under jit: every target block keeps its first
  ``num_target_tokens`` patches in raster order and the context its first
  ``num_context_tokens`` -- the official collator truncates the same way, to the minimum over
  the batch. Choose ``num_target_tokens`` <= the smallest block (:func:`multiblock_token_counts`)
  so targets are never padded; a context with fewer patches than ``num_context_tokens`` repeats
  its patches (the official collator instead redraws contexts with at most ``min_keep`` = 10).

  Returns:
    context_ids: (B, num_context_tokens) int32 patch indices of the context.
    target_ids: (B, num_targets, num_target_tokens) int32 patch indices of each target block.
    context_mask: (B, N) bool, the whole context (before truncation).
    target_masks: (B, num_targets, N) bool, the whole target blocks.
  """
  k_size, k_pos = jax.random.split(rng)
  u_t, u_c = jax.random.uniform(k_size, (2,))
  th, tw = block_size(u_t, grid, target_scale, target_aspect)
  ch, cw = block_size(u_c, grid, context_scale, context_aspect)

  def one(key):
    k_t, k_c = jax.random.split(key)
    kt_top, kt_left = jax.random.split(k_t)
    tops = jax.random.randint(kt_top, (num_targets,), 0, grid - th)
    lefts = jax.random.randint(kt_left, (num_targets,), 0, grid - tw)
    targets = jax.vmap(lambda t, l: _box(t, l, th, tw, grid))(tops, lefts)
    kc_top, kc_left = jax.random.split(k_c)
    top = jax.random.randint(kc_top, (), 0, grid - ch)
    left = jax.random.randint(kc_left, (), 0, grid - cw)
    context = _box(top, left, ch, cw, grid) & ~jnp.any(targets, axis=0)
    target_ids = jax.vmap(lambda m: _first_k(m, num_target_tokens))(targets)
    return _first_k(context, num_context_tokens), target_ids, context, targets

  context_ids, target_ids, context, targets = jax.vmap(one)(jax.random.split(k_pos, batch))
  return {'context_ids': context_ids, 'target_ids': target_ids, 'context_mask': context,
          'target_masks': targets}


def multiblock_token_counts(grid: int, *, num_targets: int = 4, target_scale=(0.15, 0.2),
                            target_aspect=(0.75, 1.5), context_scale=(0.85, 1.0),
                            context_aspect=(1.0, 1.0), samples: int = 1024,
                            quantile: float = 0.01, seed: int = 0) -> tuple[int, int]:
  """Default static (num_target_tokens, num_context_tokens) for :func:`multiblock_masks`.

  Targets: the smallest block area over the whole size range, so no target is ever padded
  (evaluated on a fine grid of draws; areas are a step function of the draw). Context: the
  ``quantile`` of the context sizes over ``samples`` draws (with a fixed seed, so a config always
  gets the same count) -- 1 % approximates the official collator's minimum over a GPU's batch of
  128 images, so about one image in a hundred repeats some context patches.
  """
  us = np.linspace(0.0, 1.0, 10001)
  h, w = block_size(us, grid, target_scale, target_aspect)
  num_target = int(np.min(h * w))
  draw = lambda k: multiblock_masks(   # batches of one: each draw its own block sizes
      k, 1, grid, num_targets=num_targets, target_scale=target_scale,
      target_aspect=target_aspect, context_scale=context_scale, context_aspect=context_aspect,
      num_target_tokens=1, num_context_tokens=1)['context_mask'][0]
  keys = jax.random.split(jax.random.PRNGKey(seed), samples)
  counts = np.asarray(jax.jit(jax.vmap(draw))(keys)).sum(axis=1)
  num_context = int(max(1, np.floor(np.quantile(counts, quantile))))
  return num_target, num_context


# ----------------------------------------------------------------------------- speech span masks

def span_mask(rng, batch: int, num_frames: int, mask_prob: float, span: int,
              min_masks: int = 2, equalize: bool = True):
  """wav2vec 2.0 / HuBERT span masking of a (batch, num_frames) frame grid, jittable.

  Baevski et al., "wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
  Representations", NeurIPS 2020, Sec. 3.1 (a proportion p = 0.065 of the frames start a span of
  M = 10, i.e. fairseq's ``mask_prob`` = p * M = 0.65); Hsu et al., "HuBERT: Self-Supervised
  Speech Representation Learning by Masked Prediction of Hidden Units", 2021 (p = 8 %,
  l = 10: ``mask_prob`` 0.8). As fairseq's ``compute_mask_indices``
  (fairseq/data/data_utils.py, ``mask_type='static'``, no padding, no ``no_overlap``):

  * the number of spans ``n = max(min_masks, int(mask_prob * T / span + u))``, ``u ~ U[0, 1)``
    (probabilistic rounding), drawn once for the whole batch as fairseq does without padding;
  * per row, n distinct start frames uniformly from ``{0, ..., T - span - 1}`` (fairseq's
    ``np.random.choice(T - span, n, replace=False)``: spans end by frame T - 2, so the last frame
    is never masked); if ``T - span <= n`` the starts come from ``{0, ..., n}`` and spans are cut
    at T;
  * each start masks ``span`` frames; spans may overlap, so the masked fraction is below
    ``mask_prob``: for p = 0.65, span 10, about 49 % of T = 500 frames and 51 % of T = 49
    (45 % and 38 % after ``equalize`` over batches of 8);
  * ``equalize`` (fairseq's ``require_same_masks``, on in wav2vec 2.0 and HuBERT): every row keeps
    a uniform random subset of its masked frames of the batch-wide minimum size, so all rows mask
    the same number of frames. Dropped frames break spans, as in fairseq.

  ``batch``, ``num_frames``, ``mask_prob``, ``span``, ``min_masks`` are static Python numbers;
  under ``jax.jit`` the count itself stays a traced value (a mask, not a shape).

  Returns:
    (batch, num_frames) bool, True = masked.
  """
  t = num_frames
  ideal = mask_prob * t / span
  # int(x + u) with u < 1 is at most floor(x) + 1: a static bound on the number of spans.
  max_spans = max(min_masks, int(math.floor(ideal)) + 1)
  num_candidates = max(t - span, max_spans + 1)
  k_num, k_start, k_keep = jax.random.split(rng, 3)
  num_spans = jnp.maximum(
      min_masks, jnp.floor(ideal + jax.random.uniform(k_num, ())).astype(jnp.int32))
  # fairseq's guard: when T - span <= n, min_len = T - n - 1, so the starts come from [0, n].
  high = jnp.where(t - span <= num_spans, num_spans + 1, t - span)
  # A uniform subset of size n of {0, ..., high - 1} without replacement: the n smallest of
  # i.i.d. uniform keys, candidates past ``high`` pushed to the end.
  keys = jax.random.uniform(k_start, (batch, num_candidates))
  keys = jnp.where(jnp.arange(num_candidates) < high, keys, 2.0)
  starts = jnp.argsort(keys, axis=1)[:, :max_spans].astype(jnp.int32)
  used = (jnp.arange(max_spans) < num_spans).astype(jnp.int32)

  def cover(row_starts):
    # +1 where a span starts and -1 one past its end; the running sum counts covering spans.
    begin = jnp.minimum(row_starts, t)
    end = jnp.minimum(row_starts + span, t)
    delta = jnp.zeros((t + 1,), jnp.int32).at[begin].add(used).at[end].add(-used)
    return jnp.cumsum(delta)[:t] > 0

  mask = jax.vmap(cover)(starts)
  if not equalize:
    return mask
  keep = jnp.min(jnp.sum(mask, axis=1))
  score = jnp.where(mask, jax.random.uniform(k_keep, (batch, t)), 2.0)
  rank = jnp.argsort(jnp.argsort(score, axis=1), axis=1)
  return mask & (rank < keep)
