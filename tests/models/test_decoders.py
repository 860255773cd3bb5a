"""The decoder / VQ-VAE modules (the masked-image-modelling losses they train with are tested in
tests/losses/test_masked.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models import decoders
from ssl_jax.models.vit import patchify, sincos_2d_pos_embed, unpatchify

RNG = np.random.default_rng(0)


def test_simmim_head_with_blocks_mixes_tokens():
  """depth 0: each patch's prediction depends on its own token only (the paper's linear head);
  depth > 0: on the other tokens too."""
  tok = jnp.asarray(RNG.normal(size=(1, 4, 16)), jnp.float32)
  for depth, mixes in ((0, False), (1, True)):
    head = decoders.SimMIMHead(12, depth=depth, num_heads=2)
    params = head.init(jax.random.PRNGKey(0), tok)
    assert head.apply(params, tok).shape == (1, 4, 12)
    jac = jax.jacobian(lambda t: head.apply(params, t)[0, 0])(tok)   # (12, 1, 4, 16)
    assert (np.abs(np.asarray(jac)[:, 0, 1:]).max() > 0) == mixes


# ----------------------------------------------------------------------------- modules

def test_nearest_code_matches_brute_force():
  z, cb = RNG.normal(size=(2, 3, 5)), RNG.normal(size=(11, 5))
  want = np.argmin(((z[..., None, :] - cb) ** 2).sum(-1), -1)
  np.testing.assert_array_equal(decoders.nearest_code(jnp.asarray(z), jnp.asarray(cb)), want)


def test_vqvae_straight_through_gradient_paths():
  model = decoders.VQVAE(num_codes=8, code_dim=4, hidden=8, num_down=2, num_res=1)
  x = jnp.asarray(RNG.normal(size=(2, 8, 8, 3)), jnp.float32)
  params = model.init(jax.random.PRNGKey(0), x)['params']
  out = model.apply({'params': params}, x)
  assert out['indices'].shape == (2, 2, 2) and out['x_rec'].shape == x.shape
  np.testing.assert_array_equal(
      out['z_q'], np.asarray(params['codebook'])[np.asarray(out['indices'])])

  def recon(p):
    return jnp.mean((model.apply({'params': p}, x)['x_rec'] - x) ** 2)

  g = jax.grad(recon)(params)
  # The reconstruction reaches the encoder through the straight-through copy ...
  assert float(jnp.abs(g['encoder']['conv_out']['kernel']).sum()) > 0
  # ... but never the codebook (only the codebook loss trains it).
  np.testing.assert_array_equal(g['codebook'], 0.0)


def test_mae_decoder_shapes_and_fixed_pos_embed():
  dec = decoders.MAEDecoder(grid=(4, 4), patch_dim=48, embed_dim=16, depth=1, num_heads=2)
  tokens = jnp.ones((2, 1 + 4, 32))
  ids = jnp.tile(jnp.arange(16), (2, 1))
  params = dec.init(jax.random.PRNGKey(0), tokens, ids)['params']
  assert dec.apply({'params': params}, tokens, ids).shape == (2, 16, 48)
  assert 'pos_embed' not in params and params['mask_token'].shape == (1, 1, 16)
  assert sincos_2d_pos_embed(16, 4, 1).shape == (17, 16)


def test_mae_decoder_restores_image_order():
  """Feeding the visible tokens in another shuffled order (with the matching ids_restore) gives
  the same per-patch predictions: the decoder un-shuffles before its blocks."""
  dec = decoders.MAEDecoder(grid=(2, 2), patch_dim=4, embed_dim=8, depth=1, num_heads=2,
                            num_prefix_tokens=0)
  vis = jnp.asarray(RNG.normal(size=(1, 2, 6)), jnp.float32)   # patches 3 and 1 visible
  params = dec.init(jax.random.PRNGKey(0), vis, jnp.zeros((1, 4), jnp.int32))['params']
  shuffle_a, shuffle_b = np.array([3, 1, 0, 2]), np.array([1, 3, 2, 0])
  out_a = dec.apply({'params': params}, vis, jnp.asarray(np.argsort(shuffle_a))[None])
  out_b = dec.apply({'params': params}, vis[:, ::-1], jnp.asarray(np.argsort(shuffle_b))[None])
  np.testing.assert_allclose(out_a, out_b, rtol=1e-5, atol=1e-6)


def test_patchify_of_pixel_mask_roundtrip():
  x = jnp.asarray(RNG.normal(size=(2, 8, 8, 3)), jnp.float32)
  np.testing.assert_array_equal(unpatchify(patchify(x, 4), 4, 2, 2, 3), x)


def test_data2vec_conv_decoder_shapes_and_grid_check():
  from ssl_jax.models.decoders import Data2VecConvDecoder
  dec = Data2VecConvDecoder((2, 3), out_dim=8, dim=16, layers=2, groups=4)
  x = jnp.ones((2, 6, 16))
  params = dec.init(jax.random.PRNGKey(0), x)
  assert dec.apply(params, x).shape == (2, 6, 8)
  with pytest.raises(ValueError, match='2x3 grid'):
    dec.apply(params, jnp.ones((2, 5, 16)))
