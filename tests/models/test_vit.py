"""Tests for ssl_jax.models.vit on a tiny ViT (D=32, depth 2, 16 px, patch 4)."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models import vit as vit_lib
from ssl_jax.models.vit import (ViT, VIT_PRESETS, patchify, resample_pos_embed,
                                sincos_2d_pos_embed, unpatchify)

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
N = (16 // 4) ** 2


def _images(b=2, size=16, seed=0):
    return jax.random.normal(jax.random.key(seed), (b, size, size, 3))


@pytest.fixture(scope='module')
def model_and_vars():
    model = ViT(**TINY)
    return model, model.init(jax.random.key(0), _images())


def test_output_shapes(model_and_vars):
    model, variables = model_and_vars
    x = _images()
    assert model.apply(variables, x).shape == (2, 32)
    out = model.apply(variables, x, method=ViT.encode, return_layers=True)
    assert out['tokens'].shape == (2, 1 + N, 32)
    assert out['prefix'].shape == (2, 1, 32)
    assert out['patches'].shape == (2, N, 32)
    assert len(out['layers']) == 2 and out['layers'][0].shape == (2, 1 + N, 32)
    # The pooled feature is the normed CLS token.
    np.testing.assert_allclose(model.apply(variables, x), out['tokens'][:, 0], atol=1e-6)


def test_param_names_follow_timm(model_and_vars):
    _, variables = model_and_vars
    flat = {'/'.join(k): v.shape for k, v in
            flax.traverse_util.flatten_dict(variables['params']).items()}
    expected = {
        'patch_embed/proj/kernel': (4, 4, 3, 32), 'patch_embed/proj/bias': (32,),
        'cls_token': (1, 1, 32), 'pos_embed': (1, 1 + N, 32),
        'norm/scale': (32,), 'norm/bias': (32,),
    }
    for i in range(2):
        p = f'blocks_{i}/'
        expected.update({
            p + 'norm1/scale': (32,), p + 'norm1/bias': (32,),
            p + 'attn/qkv/kernel': (32, 96), p + 'attn/qkv/bias': (96,),
            p + 'attn/proj/kernel': (32, 32), p + 'attn/proj/bias': (32,),
            p + 'norm2/scale': (32,), p + 'norm2/bias': (32,),
            p + 'mlp/fc1/kernel': (32, 128), p + 'mlp/fc1/bias': (128,),
            p + 'mlp/fc2/kernel': (128, 32), p + 'mlp/fc2/bias': (32,),
        })
    assert flat == expected


def test_init_statistics(model_and_vars):
    _, variables = model_and_vars
    params = variables['params']
    # Patch conv: xavier_uniform on the flattened (C*p*p, D) kernel -> bound sqrt(6/(48+32)).
    bound = math.sqrt(6.0 / (48 + 32))
    k = np.asarray(params['patch_embed']['proj']['kernel'])
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.8 * bound
    qkv = np.asarray(params['blocks_0']['attn']['qkv']['kernel'])
    assert np.abs(qkv).max() <= math.sqrt(6.0 / (32 + 96))
    assert np.all(np.asarray(params['blocks_0']['attn']['qkv']['bias']) == 0)
    assert np.all(np.asarray(params['norm']['scale']) == 1)
    assert 0.01 < float(np.std(params['pos_embed'])) < 0.03


def test_prefix_tokens_and_mean_pool():
    x = _images()
    m2 = ViT(**TINY, num_prefix_tokens=2)
    v2 = m2.init(jax.random.key(0), x)
    assert v2['params']['cls_token'].shape == (1, 1, 32)
    assert v2['params']['reg_token'].shape == (1, 1, 32)
    assert v2['params']['pos_embed'].shape == (1, 2 + N, 32)
    out = m2.apply(v2, x, method=ViT.encode)
    assert out['prefix'].shape == (2, 2, 32) and out['patches'].shape == (2, N, 32)

    m0 = ViT(**TINY, num_prefix_tokens=0)
    v0 = m0.init(jax.random.key(0), x)
    assert 'cls_token' not in v0['params']
    assert v0['params']['pos_embed'].shape == (1, N, 32)
    out = m0.apply(v0, x, method=ViT.encode)
    np.testing.assert_allclose(m0.apply(v0, x), out['patches'].mean(1), atol=1e-6)


def test_pool_token_and_mean():
    """``pool`` / ``pool_token`` choose the pooled feature (SiT: token 1; MAE: patch mean)."""
    x = _images()
    m = ViT(**TINY, num_prefix_tokens=2, pool_token=1)
    v = m.init(jax.random.key(0), x)
    out = m.apply(v, x, method=ViT.encode)
    np.testing.assert_allclose(m.apply(v, x), out['prefix'][:, 1], atol=1e-6)
    mm = ViT(**TINY, num_prefix_tokens=2, pool='mean')
    np.testing.assert_allclose(mm.apply(v, x), out['patches'].mean(1), atol=1e-6)
    with pytest.raises(ValueError, match='pool_token=2'):
        ViT(**TINY, num_prefix_tokens=2, pool_token=2).init(jax.random.key(0), x)


def test_build_backbone_reads_every_vit_field():
    """The one backbone definition: each ViT field a method needs comes from config.model."""
    from ssl_jax import config as config_lib, models  # pylint: disable=g-import-not-at-top
    m = config_lib.base_config().model
    m.backbone, m.img_size, m.patch_size = 'vit_tiny', 16, 4
    m.num_prefix_tokens, m.pos_embed, m.frozen_patch_embed = 2, 'sincos', True
    m.pool, m.pool_token = 'token', 1
    vit = models.build_backbone(m)
    assert (vit.num_prefix_tokens, vit.pos_embed, vit.frozen_patch_embed, vit.pool,
            vit.pool_token) == (2, 'sincos', True, 'token', 1)
    m.backbone = 'resnet18'
    with pytest.raises(ValueError, match='model.num_prefix_tokens=2 needs a ViT'):
        models.build_backbone(m)


def _sincos_reference(dim, gh, gw):
    """Independent loop implementation of MAE's formula."""
    quarter = dim // 4
    out = np.zeros((gh * gw, dim))
    for r in range(gh):
        for c in range(gw):
            t = r * gw + c
            for i in range(quarter):
                omega = 1.0 / 10000 ** (2 * i / (dim / 2))
                out[t, i] = math.sin(c * omega)
                out[t, quarter + i] = math.cos(c * omega)
                out[t, 2 * quarter + i] = math.sin(r * omega)
                out[t, 3 * quarter + i] = math.cos(r * omega)
    return out


@pytest.mark.parametrize('dim,grid,prefix', [(16, 3, 1), (32, 4, 0), (8, (2, 5), 2)])
def test_sincos_matches_formula(dim, grid, prefix):
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    got = sincos_2d_pos_embed(dim, grid, prefix)
    assert got.shape == (prefix + gh * gw, dim) and got.dtype == np.float32
    np.testing.assert_array_equal(got[:prefix], 0.0)
    np.testing.assert_allclose(got[prefix:], _sincos_reference(dim, gh, gw), atol=1e-6)


def test_sincos_model_has_no_pos_param():
    m = ViT(**TINY, pos_embed='sincos')
    v = m.init(jax.random.key(0), _images())
    assert 'pos_embed' not in v['params']
    assert m.apply(v, _images()).shape == (2, 32)
    assert m.apply(v, _images(size=8)).shape == (2, 32)


def test_patchify_roundtrip():
    imgs = jax.random.normal(jax.random.key(1), (2, 8, 12, 3))
    p = patchify(imgs, 4)
    assert p.shape == (2, 6, 48)
    # MAE ordering: patch (row 1, col 2) is the 3rd patch of the 2nd row; pixels (p, q, c).
    np.testing.assert_array_equal(p[0, 1 * 3 + 2], np.asarray(imgs[0, 4:8, 8:12, :]).reshape(-1))
    np.testing.assert_array_equal(unpatchify(p, 4, 2, 3, 3), imgs)


def test_pos_embed_interpolation(model_and_vars):
    model, variables = model_and_vars
    pe = variables['params']['pos_embed']
    # Native grid: identical.
    np.testing.assert_array_equal(resample_pos_embed(pe, (4, 4), (4, 4), 1), pe)
    # Other grids: shape, prefix kept, constant field stays constant (bicubic weights sum to 1).
    up = resample_pos_embed(pe, (6, 6), (4, 4), 1)
    assert up.shape == (1, 1 + 36, 32)
    np.testing.assert_array_equal(up[:, 0], pe[:, 0])
    const = jnp.full((1, 17, 32), 0.5)
    np.testing.assert_allclose(resample_pos_embed(const, (2, 3), (4, 4), 1), 0.5, atol=1e-6)
    # The model runs on 8 px and 24 px inputs.
    for size, n in ((8, 4), (24, 36)):
        out = model.apply(variables, _images(size=size), method=ViT.encode)
        assert out['tokens'].shape == (2, 1 + n, 32)
        assert np.all(np.isfinite(out['tokens']))


def test_ids_keep(model_and_vars):
    model, variables = model_and_vars
    x = _images()
    ref = model.apply(variables, x, method=ViT.encode)
    ids = jnp.broadcast_to(jnp.arange(N), (2, N))
    same = model.apply(variables, x, method=ViT.encode, ids_keep=ids)
    np.testing.assert_allclose(same['tokens'], ref['tokens'], atol=1e-5)
    keep = jnp.array([[0, 5, 9, 15], [3, 2, 1, 0]])
    out = model.apply(variables, x, method=ViT.encode, ids_keep=keep)
    assert out['tokens'].shape == (2, 1 + 4, 32)
    assert not np.allclose(out['tokens'][:, 0], ref['tokens'][:, 0], atol=1e-4)


def test_mask_token(model_and_vars):
    model, variables = model_and_vars
    x = _images()
    tok = jnp.ones((32,))
    ref = model.apply(variables, x, method=ViT.encode)
    none = model.apply(variables, x, method=ViT.encode, mask=jnp.zeros((2, N), bool),
                       mask_token=tok)
    np.testing.assert_allclose(none['tokens'], ref['tokens'], atol=1e-6)
    # Masking everything makes the two images' outputs identical (the input is gone).
    all_ = model.apply(variables, x, method=ViT.encode, mask=jnp.ones((2, N), bool),
                       mask_token=tok)
    np.testing.assert_allclose(all_['tokens'][0], all_['tokens'][1], atol=1e-5)
    assert not np.allclose(all_['tokens'], ref['tokens'], atol=1e-3)


def test_drop_path():
    m = ViT(**TINY, drop_path_rate=0.5)
    x = _images()
    v = m.init(jax.random.key(0), x)
    a = m.apply(v, x, train=False)
    b = m.apply(v, x, train=False)
    np.testing.assert_array_equal(a, b)
    t1 = m.apply(v, x, train=True, rngs={'dropout': jax.random.key(1)})
    t2 = m.apply(v, x, train=True, rngs={'dropout': jax.random.key(2)})
    assert not np.allclose(t1, t2)


def test_last_selfattention(model_and_vars):
    model, variables = model_and_vars
    attn = model.apply(variables, _images(), method=ViT.last_selfattention)
    assert attn.shape == (2, 2, 1 + N, 1 + N)
    np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-5)
    assert np.all(attn >= 0)


def test_attention_fast_path_matches_probs(model_and_vars):
    """Output of the fused attention equals probs @ v with the same qkv weights."""
    model, variables = model_and_vars
    attn_params = {'params': variables['params']['blocks_0']['attn']}
    mod = vit_lib.Attention(32, 2)
    h = jax.random.normal(jax.random.key(3), (2, 5, 32))
    probs = mod.apply(attn_params, h, True)
    qkv = h @ attn_params['params']['qkv']['kernel'] + attn_params['params']['qkv']['bias']
    v = qkv.reshape(2, 5, 3, 2, 16)[:, :, 2]
    ctx = jnp.einsum('bhqk,bkhd->bqhd', probs, v).reshape(2, 5, 32)
    proj = attn_params['params']['proj']
    expected = ctx @ proj['kernel'] + proj['bias']
    np.testing.assert_allclose(mod.apply(attn_params, h), expected, atol=1e-5)


def test_jit_remat_frozen_and_bf16(model_and_vars):
    model, variables = model_and_vars
    x = _images()
    ref = model.apply(variables, x)
    np.testing.assert_allclose(jax.jit(model.apply)(variables, x), ref, atol=1e-5)
    # remat keeps the same parameter tree and outputs.
    rm = ViT(**TINY, remat=True)
    np.testing.assert_allclose(jax.jit(rm.apply)(variables, x), ref, atol=1e-5)
    # frozen patch embed: zero gradient to patch_embed, nonzero elsewhere.
    fm = ViT(**TINY, frozen_patch_embed=True)
    grads = jax.grad(lambda p: fm.apply({'params': p}, x).sum())(variables['params'])
    assert float(jnp.abs(grads['patch_embed']['proj']['kernel']).max()) == 0.0
    assert float(jnp.abs(grads['blocks_0']['attn']['qkv']['kernel']).max()) > 0.0
    # bf16 compute, float32 params and float32 pooled output.
    bm = ViT(**TINY, dtype=jnp.bfloat16)
    vb = bm.init(jax.random.key(0), x)
    assert vb['params']['blocks_0']['mlp']['fc1']['kernel'].dtype == jnp.float32
    out = bm.apply(variables, x)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, atol=0.1)


def test_presets():
    assert VIT_PRESETS['vit_small'] == dict(embed_dim=384, depth=12, num_heads=6)
    m = vit_lib.vit_base(patch_size=8)
    assert (m.embed_dim, m.depth, m.num_heads, m.patch_size) == (768, 12, 12, 8)
    t = vit_lib.vit_tiny(depth=2)
    assert (t.embed_dim, t.depth, t.num_heads) == (192, 2, 3)


def test_gelu_is_exact_erf_gelu_with_its_derivative():
  # gelu(x) = x Phi(x); gelu'(x) = Phi(x) + x phi(x), Phi / phi the standard normal cdf / pdf.
  x = np.linspace(-9.0, 9.0, 721).astype(np.float32)
  cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
  pdf = np.exp(-0.5 * x.astype(np.float64) ** 2) / math.sqrt(2 * math.pi)
  np.testing.assert_allclose(vit_lib.gelu(jnp.asarray(x)), x * cdf, rtol=1e-5, atol=1e-6)
  grad = jax.vmap(jax.grad(vit_lib.gelu))(jnp.asarray(x))
  np.testing.assert_allclose(grad, cdf + x * pdf, rtol=1e-5, atol=1e-6)
  assert vit_lib.gelu(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16


def test_dense_flattens_but_matches_nn_dense():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 8))
  ours, theirs = vit_lib.Dense(6), flax.linen.Dense(6)
  params = theirs.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(
      jnp.shape, params)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-6,
                             atol=1e-6)
  loss = lambda m: lambda p: jnp.sum(jnp.sin(m.apply(p, x)))
  for a, b in zip(jax.tree.leaves(jax.grad(loss(ours))(params)),
                  jax.tree.leaves(jax.grad(loss(theirs))(params))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # The kernel gradient's dot has no transposed copy of the output gradient left in it.
  hlo = jax.jit(jax.grad(loss(ours))).lower(params).compile().as_text()
  assert 'f32[6,30]' not in hlo, 'transposed (F, B*T) output gradient materialised'
