"""Issue-32 ViT parts on a tiny ViT (D=32, depth 2, 16 px, patch 4): registers, LayerScale, SwiGLU,
QK-norm, 2-D RoPE, position interpolation, the ViT-S/B/L/g backbones and their config fields."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import config as config_lib
from ssl_jax import models
from ssl_jax.models import vit as vit_lib
from ssl_jax.models.vit import ViT

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
N = 16
X = np.asarray(jax.random.normal(jax.random.key(0), (2, 16, 16, 3)))
PARTS = {'registers': dict(num_registers=3), 'layerscale': dict(layerscale_init=0.1),
         'swiglu': dict(mlp='swiglu'), 'qk_norm': dict(qk_norm=True), 'rope': dict(rope=True)}


def _perturb(variables, seed=1):
    """Every leaf moved off its init (LayerNorm scale 1, zero biases, gamma constant) so each
    parameter changes the output."""
    leaves, treedef = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.fixture(scope='module')
def base():
    model = ViT(**TINY)
    variables = _perturb(model.init(jax.random.key(0), X))
    return model, variables, np.asarray(model.apply(variables, X))


def _flat(variables):
    return flax.traverse_util.flatten_dict(variables['params'], sep='/')


@pytest.mark.parametrize('part', sorted(PARTS))
def test_each_part_changes_output_only_when_on(base, part):
    """Off: the part adds no parameter and the model is bit-identical to the plain ViT (same
    init too); on: the pooled feature moves."""
    model, variables, ref = base
    off_kw = {k: type(v)() if not isinstance(v, str) else 'gelu' for k, v in PARTS[part].items()}
    off = ViT(**TINY, **off_kw)
    off_vars = off.init(jax.random.key(0), X)
    assert jax.tree_util.tree_structure(off_vars) == jax.tree_util.tree_structure(variables)
    np.testing.assert_array_equal(np.asarray(off.apply(variables, X)), ref)
    on = ViT(**TINY, **PARTS[part])
    on_vars = dict(_flat(_perturb(on.init(jax.random.key(0), X))))
    on_vars.update({k: v for k, v in _flat(variables).items()
                    if k in on_vars and on_vars[k].shape == v.shape})
    if part in ('rope', 'swiglu'):  # same parameter names (SwiGLU: wider fc1, fc2)
        assert set(on_vars) == set(_flat(variables))
    else:
        assert set(on_vars) > set(_flat(variables))
    feats = np.asarray(on.apply({'params': flax.traverse_util.unflatten_dict(on_vars, sep='/')},
                                X))
    assert feats.shape == ref.shape == (2, 32)
    assert np.abs(feats - ref).max() > 1e-3


def test_param_shapes_and_names():
    m = ViT(**TINY, num_registers=4, layerscale_init=1e-5, mlp='swiglu', qk_norm=True)
    flat = {k: v.shape for k, v in _flat(m.init(jax.random.key(0), X)).items()}
    h = vit_lib.swiglu_hidden_dim(32, 4.0)
    assert h == 88   # int(int(128) * 2 / 3) = 85 -> next multiple of 8
    assert flat['register_tokens'] == (1, 4, 32)
    assert flat['pos_embed'] == (1, 1 + N, 32)   # registers carry no position embedding
    assert flat['blocks_0/ls1/gamma'] == flat['blocks_1/ls2/gamma'] == (32,)
    assert flat['blocks_0/mlp/fc1/kernel'] == (32, 2 * h)
    assert flat['blocks_0/mlp/fc2/kernel'] == (h, 32)
    assert flat['blocks_0/attn/q_norm/scale'] == flat['blocks_0/attn/k_norm/bias'] == (16,)
    gamma = m.init(jax.random.key(0), X)['params']['blocks_0']['ls1']['gamma']
    np.testing.assert_array_equal(np.asarray(gamma), np.full((32,), 1e-5, np.float32))
    assert vit_lib.swiglu_hidden_dim(1536, 4.0) == 4096   # DINOv2 ViT-g/14


def test_registers_are_seen_but_never_pooled_or_returned():
    m = ViT(**TINY, num_registers=3)
    v = _perturb(m.init(jax.random.key(0), X))
    out = m.apply(v, X, method=ViT.encode, return_layers=True)
    assert out['tokens'].shape == (2, 1 + N, 32) and out['patches'].shape == (2, N, 32)
    assert out['registers'].shape == (2, 3, 32)
    assert out['layers'][0].shape == (2, 1 + N, 32)
    np.testing.assert_array_equal(np.asarray(m.apply(v, X)), np.asarray(out['tokens'][:, 0]))
    mean = ViT(**TINY, num_registers=3, pool='mean')
    np.testing.assert_allclose(np.asarray(mean.apply(v, X)),
                               np.asarray(out['patches'].mean(1)), atol=1e-6)
    # The registers take part in attention: changing them moves the [CLS] feature.
    v2 = jax.tree_util.tree_map(lambda a: a, v)
    v2['params']['register_tokens'] = -v['params']['register_tokens']
    assert np.abs(np.asarray(m.apply(v2, X)) - np.asarray(m.apply(v, X))).max() > 1e-3
    att = m.apply(v, X, method=ViT.last_selfattention)
    assert att.shape == (2, 2, 1 + N, 1 + N)
    assert float(att.sum(-1).max()) < 1.0   # the registers' share is left out
    # MAE-style visible-token encoding keeps registers too.
    ids = jnp.tile(jnp.arange(5)[None], (2, 1))
    assert m.apply(v, X, method=ViT.encode, ids_keep=ids)['tokens'].shape == (2, 6, 32)


def test_rope_is_relative():
    """q.k after 2-D RoPE depends only on the difference of the two positions."""
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, 1, 5, 1, 16)).astype(np.float32)
    pos = jnp.asarray(rng.integers(0, 20, size=(1, 5, 2)))
    shift = jnp.asarray([[[3, -7]]])

    def logits(p):
        a = vit_lib.rope_2d_angles(p, 16)
        return jnp.einsum('bqhd,bkhd->bqk', vit_lib.apply_rope(q, a), vit_lib.apply_rope(k, a))

    np.testing.assert_allclose(logits(pos + shift), logits(pos), atol=1e-4)
    assert np.abs(np.asarray(logits(pos * 2) - logits(pos))).max() > 1e-2   # but not scale
    # A zero angle leaves the token as it is (prefix and register tokens).
    np.testing.assert_array_equal(
        np.asarray(vit_lib.apply_rope(q, jnp.zeros((1, 5, 8)))), q)


def test_rope_with_ids_keep_matches_full_sequence_positions():
    """Under MAE-style ids_keep each kept patch rotates by its own grid position: keeping every
    patch in a permuted order gives the same pooled feature."""
    m = ViT(**TINY, rope=True, pos_embed='none')
    v = _perturb(m.init(jax.random.key(0), X))
    perm = jnp.tile(jax.random.permutation(jax.random.key(3), N)[None], (2, 1))
    full = m.apply(v, X, method=ViT.encode)['prefix']
    kept = m.apply(v, X, method=ViT.encode, ids_keep=perm)['prefix']
    np.testing.assert_allclose(np.asarray(kept), np.asarray(full), atol=1e-5)


def test_pos_embed_interpolation():
    """Identity at the native grid; at another resolution a resampled table (patch 14 style:
    28 px -> 2x2 grid, 56 px -> 4x4)."""
    pe = jax.random.normal(jax.random.key(0), (1, 1 + 4, 8))
    assert vit_lib.resample_pos_embed(pe, (2, 2), (2, 2), 1) is pe
    up = vit_lib.resample_pos_embed(pe, (4, 4), (2, 2), 1)
    assert up.shape == (1, 1 + 16, 8)
    np.testing.assert_array_equal(np.asarray(up[:, 0]), np.asarray(pe[:, 0]))
    m = ViT(img_size=28, patch_size=14, embed_dim=32, depth=1, num_heads=2, num_registers=1)
    v = m.init(jax.random.key(0), np.zeros((1, 28, 28, 3), np.float32))
    out = m.apply(v, np.zeros((1, 56, 56, 3), np.float32), method=ViT.encode)
    assert out['patches'].shape == (1, 16, 32)


def test_backbones_registered_and_built_from_config():
    for name in ('vit_tiny', 'vit_small', 'vit_base', 'vit_large', 'vit_giant'):
        assert name in models.BACKBONES
    c = config_lib.base_config()
    c.model.update(dict(backbone='vit_giant', depth=1, num_registers=4, layerscale_init=1e-5,
                        mlp='swiglu', qk_norm=True, rope=True))
    b = models.build_backbone(c.model)
    assert (b.embed_dim, b.num_heads, b.depth) == (1536, 24, 1)
    assert (b.num_registers, b.layerscale_init, b.mlp, b.qk_norm, b.rope) == (
        4, 1e-5, 'swiglu', True, True)
    assert models.build_backbone(config_lib.base_config().model.copy_and_resolve_references()
                                 ).__class__.__name__ == 'ResNet'


@pytest.mark.parametrize('field,value,match', [
    ('num_registers', -1, 'model.num_registers'), ('layerscale_init', -1e-5,
                                                   'model.layerscale_init'),
    ('mlp', 'swiglue', "did you mean 'swiglu'")])
def test_config_validation(field, value, match):
    c = config_lib.base_config()
    c.model.backbone = 'vit_small'
    c.model[field] = value
    with pytest.raises(ValueError, match=match):
        config_lib.validate(c)


def test_config_rope_head_dim_and_non_vit():
    c = config_lib.base_config()
    c.model.update(dict(backbone='vit_small', embed_dim=36, num_heads=2, rope=True))
    with pytest.raises(ValueError, match='model.rope.*divisible by 4'):
        config_lib.validate(c)
    c = config_lib.base_config()
    c.model.num_registers = 4   # resnet18
    with pytest.raises(ValueError, match='num_registers=4 needs a ViT'):
        models.build_backbone(c.model)
