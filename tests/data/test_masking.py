"""Tests for ssl_jax.data.masking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.data.masking import (BlockMaskBank, blockwise_mask, blockwise_masks, num_kept,
                                  random_masking, unshuffle)


def test_num_kept():
    assert num_kept(196, 0.75) == 49
    assert num_kept(16, 0.6) == 6  # int(6.4)
    with pytest.raises(ValueError):
        num_kept(16, 1.0)


def test_random_masking_counts_and_consistency():
    b, n, ratio = 4, 16, 0.75
    out = random_masking(jax.random.key(0), b, n, ratio)
    k = 4
    assert out['ids_keep'].shape == (b, k) and out['ids_restore'].shape == (b, n)
    mask = np.asarray(out['mask'])
    assert mask.dtype == np.float32
    np.testing.assert_array_equal(mask.sum(1), n - k)
    for i in range(b):
        keep = np.asarray(out['ids_keep'][i])
        assert len(set(keep.tolist())) == k
        # Kept patches are exactly the unmasked ones.
        np.testing.assert_array_equal(np.sort(keep), np.flatnonzero(mask[i] == 0))
        # ids_restore is a permutation.
        np.testing.assert_array_equal(np.sort(out['ids_restore'][i]), np.arange(n))


def test_unshuffle_inverts_shuffle():
    b, n, d = 3, 16, 5
    out = random_masking(jax.random.key(1), b, n, 0.5)
    x = jax.random.normal(jax.random.key(2), (b, n, d))
    ids_shuffle = jnp.argsort(out['ids_restore'], axis=1)
    np.testing.assert_array_equal(ids_shuffle[:, :8], out['ids_keep'])
    shuffled = jnp.take_along_axis(x, ids_shuffle[..., None], axis=1)
    np.testing.assert_array_equal(unshuffle(shuffled, out['ids_restore']), x)
    # MAE decoder usage: kept tokens then mask tokens (here zeros) -> zeros at masked places.
    kept = jnp.take_along_axis(x, out['ids_keep'][..., None], axis=1)
    full = unshuffle(jnp.concatenate([kept, jnp.zeros((b, n - 8, d))], 1), out['ids_restore'])
    m = np.asarray(out['mask'], bool)
    np.testing.assert_array_equal(np.asarray(full)[~m], np.asarray(x)[~m])
    np.testing.assert_array_equal(np.asarray(full)[m], 0.0)


def test_random_masking_keys_and_jit():
    f = jax.jit(random_masking, static_argnums=(1, 2, 3))
    a = f(jax.random.key(0), 2, 64, 0.75)
    b = f(jax.random.key(1), 2, 64, 0.75)
    c = f(jax.random.key(0), 2, 64, 0.75)
    assert not np.array_equal(a['mask'], b['mask'])
    np.testing.assert_array_equal(a['mask'], c['mask'])
    # Each image draws its own mask.
    assert not np.array_equal(a['mask'][0], a['mask'][1])


def test_blockwise_mask_count_bounds():
    rng = np.random.default_rng(0)
    target = 75  # BEiT: 40 % of 14 x 14
    counts = []
    for _ in range(200):
        m = blockwise_mask(rng, 14, 14, target, min_num_patches=16)
        assert m.shape == (14, 14) and m.dtype == bool
        counts.append(int(m.sum()))
    counts = np.array(counts)
    assert counts.max() <= target
    assert counts.min() >= 0.5 * target
    assert counts.mean() >= 0.9 * target


def test_blockwise_mask_is_blocky():
    """Masked patches form blocks: most masked patches have a masked 4-neighbour."""
    m = blockwise_mask(np.random.default_rng(3), 14, 14, 75, min_num_patches=16)
    padded = np.pad(m, 1)
    nb = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    assert (m & nb).sum() >= 0.9 * m.sum()


def test_blockwise_masks_deterministic():
    a = blockwise_masks(7, 4, 8, 8, 20)
    b = blockwise_masks(7, 4, 8, 8, 20)
    c = blockwise_masks(8, 4, 8, 8, 20)
    assert a.shape == (4, 8, 8) and a.dtype == bool
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])
    assert np.all(a.reshape(4, -1).sum(1) <= 20)


def test_block_mask_bank():
  bank = BlockMaskBank(6, (0.3, 0.3), size=32, seed=0, min_num_patches=2)
  counts = bank.bank.reshape(32, -1).sum(-1)
  assert counts.max() <= round(0.3 * 36) and counts.min() >= 4
  m = np.asarray(bank.sample(jax.random.PRNGKey(0), 64))
  assert m.shape == (64, 36) and m.dtype == bool
  # Symmetries keep the number of masked patches of a bank entry.
  assert set(m.sum(-1)) <= set(counts)
  half = BlockMaskBank(6, (0.1, 0.5), size=32, seed=0, mask_prob=0.5)
  mh = np.asarray(half.sample(jax.random.PRNGKey(1), 400))
  frac_masked_images = mh.any(-1).mean()
  assert 0.4 < frac_masked_images < 0.6
  # Deterministic given the key.
  np.testing.assert_array_equal(mh, np.asarray(half.sample(jax.random.PRNGKey(1), 400)))


# ----------------------------------------------------------------------------- speech span masks

def _fairseq_span_masks(rng, batch, t, mask_prob, span, min_masks=2, equalize=True):
  """A numpy transcription of fairseq's compute_mask_indices (static spans, no padding): one
  probabilistically rounded span count for the batch, starts without replacement from
  [0, T - span), the guard for short rows, then every row cut to the batch minimum."""
  num = max(min_masks, int(mask_prob * t / span + rng.random()))
  high = num + 1 if t - span <= num else t - span
  rows = []
  for _ in range(batch):
    starts = rng.choice(high, num, replace=False)
    idx = (starts[:, None] + np.arange(span)[None]).ravel()
    rows.append(np.unique(idx[idx < t]))
  low = min(len(r) for r in rows)
  mask = np.zeros((batch, t), bool)
  for i, r in enumerate(rows):
    if equalize and len(r) > low:
      r = rng.choice(r, low, replace=False)
    mask[i, r] = True
  return mask


def _runs(row):
  """Lengths of the runs of True in a 1-D bool array."""
  edges = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
  return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


@pytest.mark.parametrize('t', [12, 49, 500])
@pytest.mark.parametrize('equalize', [False, True])
def test_span_mask_fraction_matches_fairseq(t, equalize):
  """Monte Carlo: the masked fraction (mean and spread over batches of 8) equals that of the
  numpy transcription of fairseq, within 4 standard errors."""
  from ssl_jax.data.masking import span_mask
  batch, draws = 8, 400
  sample = jax.jit(jax.vmap(lambda k: span_mask(k, batch, t, 0.65, 10, 2, equalize)))
  ours = np.asarray(sample(jax.random.split(jax.random.PRNGKey(0), draws))).mean(axis=(1, 2))
  rng = np.random.default_rng(0)
  ref = np.array([_fairseq_span_masks(rng, batch, t, 0.65, 10, 2, equalize).mean()
                  for _ in range(draws)])
  se = np.sqrt(ours.var() / draws + ref.var() / draws)
  assert abs(ours.mean() - ref.mean()) < 4 * se + 1e-9, (ours.mean(), ref.mean(), se)
  assert abs(ours.std() - ref.std()) < 0.25 * ref.std() + 1e-9
  if t == 500 and not equalize:
    assert 0.47 < ours.mean() < 0.51   # spans overlap: ~49 %, not 65 %


def test_span_mask_spans_are_runs_of_at_least_span():
  from ssl_jax.data.masking import span_mask
  for seed in range(20):
    m = np.asarray(span_mask(jax.random.PRNGKey(seed), 4, 49, 0.65, 10, equalize=False))
    for row in m:
      runs = _runs(row)
      # 3 or 4 spans of 10 (int(3.185 + u)); overlaps merge spans into longer runs.
      assert runs.min() >= 10 and 1 <= len(runs) <= 4 and 10 <= row.sum() <= 40
      assert not row[-1]   # starts lie in [0, T - span): the last frame is never masked


def test_span_mask_equalize_and_determinism():
  from ssl_jax.data.masking import span_mask
  f = jax.jit(span_mask, static_argnums=(1, 2, 3, 4, 5, 6))
  a = np.asarray(f(jax.random.PRNGKey(3), 16, 500, 0.65, 10, 2, True))
  full = np.asarray(f(jax.random.PRNGKey(3), 16, 500, 0.65, 10, 2, False))
  assert a.dtype == bool and a.shape == (16, 500)
  assert len(set(a.sum(1).tolist())) == 1           # equal counts per row
  assert a.sum(1)[0] == full.sum(1).min()           # the batch minimum
  assert not (a & ~full).any()                       # frames only dropped, never added
  np.testing.assert_array_equal(a, np.asarray(f(jax.random.PRNGKey(3), 16, 500, 0.65, 10, 2, True)))
  assert not np.array_equal(a, np.asarray(f(jax.random.PRNGKey(4), 16, 500, 0.65, 10, 2, True)))
  assert not np.array_equal(a[0], a[1])


def test_span_mask_min_masks_and_short_rows():
  """T = 12: int(0.78 + u) <= 1 spans, raised to min_masks = 2; T - span = 2 <= 2, so fairseq's
  guard draws the 2 starts from {0, 1, 2} and cuts the spans at T."""
  from ssl_jax.data.masking import span_mask
  m = np.asarray(span_mask(jax.random.PRNGKey(0), 64, 12, 0.65, 10, equalize=False))
  counts = m.sum(1)
  assert counts.min() >= 11 and counts.max() <= 12  # starts {0, 2}: 12 frames, else 11
  assert set(counts.tolist()) == {11, 12}
