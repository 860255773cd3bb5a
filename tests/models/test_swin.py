"""Swin Transformer (Liu et al. 2021): window partition, relative position index, shifted-window
mask and receptive field, mask-token replacement, shapes and config errors."""
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax import config as config_lib
from ssl_jax import models
from ssl_jax.models import swin as swin_lib
from ssl_jax.models.swin import Swin, SwinBlock
from tests import helpers

TINY = dict(patch_size=2, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4)


def test_window_partition_layout_and_round_trip():
  x = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
  win = swin_lib.window_partition(x, 4)
  assert win.shape == (2, 4, 16, 3)
  # window 1 is the top-right 4x4 block; its token 5 is row 1, column 1 inside that block.
  np.testing.assert_array_equal(win[1, 1, 5], x[1, 1, 4 + 1])
  np.testing.assert_array_equal(win[0, 2, 0], x[0, 4, 0])
  np.testing.assert_array_equal(swin_lib.window_reverse(win, 4, 8, 8), x)
  with pytest.raises(ValueError, match='not divisible into 3x3 windows'):
    swin_lib.window_partition(x, 3)


def test_relative_position_index_formula():
  w = 3
  idx = swin_lib.relative_position_index(w)
  pos = [(i, j) for i in range(w) for j in range(w)]
  for (a, (qi, qj)), (b, (ki, kj)) in itertools.product(enumerate(pos), enumerate(pos)):
    assert idx[a, b] == (qi - ki + w - 1) * (2 * w - 1) + (qj - kj + w - 1)
  assert idx.min() == 0 and idx.max() == (2 * w - 1) ** 2 - 1
  # same offset, same bias entry; every offset appears
  assert len(np.unique(idx)) == (2 * w - 1) ** 2


def test_shifted_window_mask_blocks_wrapped_pairs_only():
  h = w = 8
  win, s = 4, 2
  mask = swin_lib.shifted_window_mask(h, w, win, s)
  assert mask.shape == (4, 16, 16)
  # A token of the rolled map at (i, j) came from ((i + s) % h, (j + s) % w); two tokens of one
  # window may attend to each other iff they wrapped around the same way along both axes.
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  wrap = np.stack([rows + s >= h, cols + s >= w], -1).astype(np.float32)
  wins = swin_lib.window_partition(wrap[None], win)[0]          # (nW, N, 2)
  same = (wins[:, :, None, :] == wins[:, None, :, :]).all(-1)
  np.testing.assert_array_equal(mask, np.where(same, 0.0, -100.0))


@pytest.mark.parametrize('shift', [0, 2])
@pytest.mark.parametrize('size,q', [(8, (5, 6)), (10, (9, 9)), (10, (0, 1)), (10, (5, 8))])
def test_block_attends_within_its_windows_only(shift, size, q):
  """Each output token of a block depends exactly on the tokens of its (shifted) window in image
  coordinates: windows tiled from offset ``-shift``, without wrapping around the border; a 10x10
  map is padded to 12x12 for 4x4 windows, its last windows holding 2 real rows / columns."""
  blk = SwinBlock(8, 2, 4, shift)
  x = jax.random.normal(jax.random.key(0), (1, size, size, 8))
  params = blk.init(jax.random.key(1), x)
  out = blk.apply(params, x)
  assert out.shape == x.shape
  jac = jax.jacobian(lambda x: blk.apply(params, x)[0, q[0], q[1]])(x)   # (8, 1, n, n, 8)
  dep = np.abs(np.asarray(jac)).sum(axis=(0, 1, 4)) > 0
  cell = lambda i: (i - shift) // 4 if i >= shift else -1
  want = np.array([[cell(i) == cell(q[0]) and cell(j) == cell(q[1]) for j in range(size)]
                   for i in range(size)])
  np.testing.assert_array_equal(dep, want)


@pytest.fixture(scope='module')
def tiny_swin():
  model = Swin(**TINY)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  return model, model.init(jax.random.key(1), x), x


def test_shapes_strides_and_parameter_names(tiny_swin):
  model, variables, x = tiny_swin
  out = model.apply(variables, x, method=Swin.encode)
  assert model.out_stride == 4 and model.feature_dim == 32
  assert out['patches'].shape == (2, 16, 32) and out['prefix'].shape == (2, 0, 32)
  assert out['grid'] == (4, 4)
  np.testing.assert_allclose(model.apply(variables, x), out['patches'].mean(1), atol=1e-6)
  p = variables['params']
  assert p['layers_0_blocks_1']['attn']['relative_position_bias_table'].shape == (49, 2)
  assert p['layers_0_downsample']['reduction']['kernel'].shape == (64, 32)
  assert 'layers_1_downsample' not in p and p['patch_embed']['norm']['scale'].shape == (16,)


def test_mask_token_replaces_masked_patches(tiny_swin):
  model, variables, x = tiny_swin
  token = jax.random.normal(jax.random.key(2), (16,))
  mask = jnp.zeros((2, 64)).at[:, :20].set(1.0)

  def out(x, m=mask):
    return model.apply(variables, x, method=Swin.encode, mask=m, mask_token=token)['patches']

  # nothing masked: the plain encoder
  np.testing.assert_allclose(out(x, jnp.zeros((2, 64))),
                             model.apply(variables, x, method=Swin.encode)['patches'], atol=1e-6)
  # the pixels under masked patches (the first 20 of the 8x8 grid of 2 px patches) do not matter
  grad = jax.grad(lambda x: out(x).sum())(x)
  pix = np.asarray(jnp.repeat(jnp.repeat(mask.reshape(2, 8, 8), 2, 1), 2, 2)).astype(bool)
  assert np.all(np.asarray(grad)[pix] == 0) and np.any(np.asarray(grad)[~pix] != 0)
  with pytest.raises(ValueError, match='needs mask_token'):
    model.apply(variables, x, method=Swin.encode, mask=mask)


def test_drop_path_needs_rng_and_changes_outputs_only_in_training():
  model = Swin(**TINY, drop_path_rate=0.5)
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
  v = model.init(jax.random.key(1), x)
  eval_out = model.apply(v, x)
  np.testing.assert_allclose(model.apply(v, x, train=False), eval_out)
  train_out = model.apply(v, x, train=True, rngs={'dropout': jax.random.key(3)})
  assert not np.allclose(train_out, eval_out)


def test_build_backbone_and_config_checks():
  m = ml_collections.ConfigDict(dict(backbone='swin_tiny', patch_size=4, window_size=6,
                                     embed_dim=0, swin_depths=(), swin_heads=(),
                                     drop_path_rate=0.0, dtype='float32'))
  b = models.build_backbone(m)
  assert (b.embed_dim, tuple(b.depths), b.out_stride, b.feature_dim) == (96, (2, 2, 6, 2), 32,
                                                                         768)
  b.check_image_size(192)   # the SimMIM paper's 192 px with window 6: 48 / 24 / 12 / 6
  b.check_image_size(224)   # 56 / 28 / 14 / 7 maps: padded to 60 / 30 / 18 / 12 for 6x6 windows
  with pytest.raises(ValueError, match='multiple of the Swin output stride 32'):
    b.check_image_size(200)

  c = config_lib.base_config()
  helpers.tiny_swin(c, 16, (2, 2), (2, 4))
  c.data.image_size = 16
  config_lib.validate(c)
  c.model.swin_heads = (2,)
  with pytest.raises(ValueError, match='model.swin_heads'):
    config_lib.validate(c)
  c.model.swin_heads = (2, 4)
  c.data.image_size = 20     # 10x10 / 5x5 maps in 4x4 windows: padded
  config_lib.validate(c)
  c.data.image_size = 18     # not a multiple of the output stride 4
  with pytest.raises(ValueError, match='data.image_size'):
    config_lib.validate(c)


def test_multi_crop_method_checks_its_local_crops_against_the_windows():
  from configs import dino as dino_config  # pylint: disable=g-import-not-at-top
  from ssl_jax import methods  # pylint: disable=g-import-not-at-top
  c = dino_config.get_config('builtin')
  helpers.tiny_swin(c, 16, (2, 2), (2, 4))
  c.data.image_size, c.method.local_crop_size = 16, 10   # 5x5 tokens: patch merging needs even
  with pytest.raises(ValueError, match=r"DINO's 'local0' crops of 10 px.*output stride 4"):
    methods.build_method(c)


def test_windows_follow_img_size_and_other_sizes_are_padded():
  """Windows and shifts come from img_size (as timm's), so DINO's 12 px local crops (6x6 / 3x3
  maps, padded to whole 4x4 windows) run through the 20 px globals' weights (10x10 / 5x5 maps)."""
  from configs import dino as dino_config  # pylint: disable=g-import-not-at-top
  net = Swin(img_size=20, patch_size=2, embed_dim=8, depths=(1, 1), num_heads=(2, 2),
             window_size=4)
  assert [net.stage_window(i) for i in range(2)] == [(4, True), (4, True)]
  small = Swin(img_size=16, patch_size=2, embed_dim=8, depths=(1, 1), num_heads=(2, 2),
               window_size=4)
  assert [small.stage_window(i) for i in range(2)] == [(4, True), (4, False)]   # 8x8, 4x4 maps
  c = helpers.tiny(dino_config.get_config('builtin'), image_size=20)
  helpers.tiny_swin(c, 8, (2, 2), (2, 2))
  c.method.local_crop_size = 12
  state, hist = helpers.run_steps(c, 1, 2)
  assert all(np.isfinite(h['loss']) for h in hist)
  table = state.params['backbone']['layers_1_blocks_1']['attn']['relative_position_bias_table']
  assert table.shape == (49, 2)
