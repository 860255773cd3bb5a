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
