"""MAE, SimMIM, BEiT (+ VQ tokenizer) and MultiMAE: masks, shapes, 1 vs 8 devices, tokenizer
checkpoint hand-over, checkpoint round trip, reconstruction grid."""
import importlib.util
import os
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.data import masking, pipeline
from ssl_jax.methods import build_method
from ssl_jax.methods.masked import beit as beit_lib
from ssl_jax.methods.masked import multimae as multimae_lib
from ssl_jax.methods.masked import simmim as simmim_lib
from ssl_jax.models import vit as vit_lib
from ssl_jax.train import loop, sharding
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name, arg='builtin'):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}', os.path.join(ROOT, 'configs',
                                                                            f'{name}.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def tiny(name, **kw):
  c = helpers.tiny(load_config(name), **kw)   # 16 px, patch 4 -> 16 patches, D=32, depth 2
  if 'decoder_dim' in c.method:
    c.method.decoder_dim, c.method.decoder_depth, c.method.decoder_heads = 16, 1, 2
  if name == 'beit':
    c.method.tokenizer.update(dict(hidden=8, code_dim=8, num_codes=16))
  if name == 'vqvae':
    c.method.update(dict(hidden=8, code_dim=8, num_codes=16))
  return c


def sample_batch(config, n=None):
  from ssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  ds = pipeline.train_dataset(sources.get_source(config.data, 'train'),
                              build_method(config).crop_specs(),
                              global_batch=n or config.data.batch_size, seed=0)
  return ds[0]


def train_and_save(config, workdir, steps):
  """``steps`` real steps on one device, then a checkpoint; returns (exp, state, history)."""
  exp = loop.Experiment(config, workdir, helpers.mesh(1))
  state, _ = exp.restore_or_init()
  it = pipeline.make_iterator(exp.train_ds)
  history = []
  for _ in range(steps):
    state, metrics = exp.step_fn(state, sharding.global_batch(exp.mesh, next(it)))
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  exp.save(state, it, force=True)
  exp.checkpointer.close()
  return exp, state, history


# ----------------------------------------------------------------------------- masks

def test_mae_views_keep_exactly_k_and_unshuffle_restores_order():
  c = tiny('mae')
  method = build_method(c)
  batch = sample_batch(c)
  v = jax.jit(method.views)(batch, jax.random.PRNGKey(3))
  n, k = 16, 4
  assert v['ids_keep'].shape == (16, k) and method.num_keep == k
  np.testing.assert_array_equal(np.asarray(v['mask']).sum(1), n - k)
  for keep, mask in zip(np.asarray(v['ids_keep']), np.asarray(v['mask'])):
    np.testing.assert_array_equal(np.sort(keep), np.flatnonzero(mask == 0))
  # Shuffle the patches as the encoder sees them, un-shuffle as the decoder does: identity.
  x = vit_lib.patchify(v['image'], 4)
  ids_shuffle = jnp.argsort(v['ids_restore'], axis=1)
  shuffled = jnp.take_along_axis(x, ids_shuffle[..., None], axis=1)
  np.testing.assert_array_equal(masking.unshuffle(shuffled, v['ids_restore']), x)
  np.testing.assert_array_equal(shuffled[:, :k], jnp.take_along_axis(x, v['ids_keep'][..., None],
                                                                     axis=1))


def test_simmim_masks_exact_count_in_mask_patch_blocks():
  m = np.asarray(simmim_lib.simmim_masks(jax.random.PRNGKey(0), 5, 3, 2, 0.6))
  assert m.shape == (5, 36)
  np.testing.assert_array_equal(m.sum(1), 6 * 4)   # ceil(0.6 * 9) mask patches of 2x2 patches
  grid = m.reshape(5, 3, 2, 3, 2)                  # every 2x2 block is all-0 or all-1
  assert np.all(grid.min(axis=(2, 4)) == grid.max(axis=(2, 4)))


def test_blockwise_device_masks_match_host_algorithm():
  gh = gw = 14
  dev = np.asarray(beit_lib.blockwise_masks_device(jax.random.PRNGKey(0), 64, gh, gw, 75, 16))
  host = masking.blockwise_masks(0, 64, gh, gw, 75, min_num_patches=16).reshape(64, -1)
  assert dev.max() == 1 and np.all(dev.sum(1) <= 75)
  assert abs(dev.sum(1).mean() - host.sum(1).mean()) < 4, (dev.sum(1).mean(), host.sum(1).mean())
  # Blocky: a masked patch has far more masked 4-neighbours than under uniform masking.
  img = dev.reshape(64, gh, gw)
  same = (img[:, 1:] == img[:, :-1]).mean()
  assert same > 0.75


def test_dirichlet_masking_total_and_allocation():
  out = multimae_lib.dirichlet_masking(jax.random.PRNGKey(0), 256, 36, 2, 18, 1.0)
  mask = np.asarray(out['mask'])
  np.testing.assert_array_equal((1 - mask).sum(1), 18)          # exactly K tokens encoded
  vis_rgb = (1 - mask[:, :36]).sum(1)
  alphas = np.asarray(out['alphas'])
  np.testing.assert_allclose(alphas.sum(1), 1.0, rtol=1e-5)
  # The per-modality share follows the Dirichlet sample (up to rounding) and varies a lot.
  assert np.abs(vis_rgb - alphas[:, 0] * 18).max() <= 1.0 + 1e-6
  assert vis_rgb.min() <= 2 and vis_rgb.max() >= 16


# ----------------------------------------------------------------------------- MAE

def test_mae_encoder_sees_visible_tokens_only():
  c = tiny('mae')
  exp = loop.Experiment(c, tempfile.mkdtemp(), helpers.mesh(1))
  shapes = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, vit_lib.Block) and context.method_name == '__call__':
      shapes.append((context.module.name, args[0].shape))
    return next_fun(*args, **kwargs)

  batch = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                 sample_batch(c))
  with nn.intercept_methods(record):
    jax.eval_shape(exp.step_fn, exp.abstract_state, batch)
  enc = [s for name, s in shapes if not name.startswith('decoder')]
  dec = [s for name, s in shapes if name.startswith('decoder')]
  assert enc and all(s == (16, 1 + 4, 32) for s in enc), enc   # [CLS] + 25 % of 16 patches
  assert dec and all(s == (16, 1 + 16, 16) for s in dec), dec  # decoder: all 16 positions


@pytest.fixture(scope='module')
def mae_run():
  workdir = tempfile.mkdtemp()
  c = tiny('mae', steps=3)
  _, state1, hist1 = train_and_save(c, workdir, 3)
  state8, hist8 = helpers.run_steps(c, 8, 3)
  return c, workdir, state1, hist1, state8, hist8


def test_mae_one_vs_eight_devices(mae_run):
  _, _, state1, hist1, state8, hist8 = mae_run
  np.testing.assert_allclose([h['loss'] for h in hist1], [h['loss'] for h in hist8], rtol=1e-4)
  # AdamW normalises each update by sqrt(v): a parameter whose gradient is ~0 (float32 noise of
  # the reduction order) moves by up to ~lr per step in either direction, so the absolute
  # tolerance is a small fraction of lr * steps, not of the gradient.
  lr = float(build_method(mae_run[0]).build_optimizer(4)[1](1))
  helpers.assert_trees_close(state1.params, state8.params, rtol=1e-3, atol=max(1e-5, 0.5 * lr))
  assert np.isfinite(hist1[-1]['loss']) and hist1[-1]['loss'] != hist1[0]['loss']


def test_mae_features_and_reconstruction_grid(mae_run):
  from ssl_jax.viz import reconstruction  # pylint: disable=g-import-not-at-top
  c, workdir, state1, *_ = mae_run
  method = build_method(c)
  images = np.zeros((8, 16, 16, 3), np.uint8)
  assert method.features(state1.params, {}, images).shape == (8, 32)
  grid = reconstruction.reconstruction_grid(c, workdir, num_images=8, scale=2)
  assert grid.shape == (3 * (32 + 1) + 1, 8 * (32 + 1) + 1, 3) and grid.dtype == np.uint8
  # Row 2 (masked) differs from row 1 (original) exactly where patches are hidden: 12 of 16.
  row = lambda i: grid[1 + i * 33:1 + i * 33 + 32, 1:33].astype(int)
  changed = np.abs(row(0) - row(1)).reshape(4, 8, 4, 8, 3).max(axis=(1, 3, 4)) > 0
  assert changed.sum() <= 12


def test_layer_decay_multipliers():
  from ssl_jax.methods.masked import mae  # pylint: disable=g-import-not-at-top
  params = {'patch_embed': {'proj': {'kernel': 1.0}}, 'blocks_0': {'w': 1.0},
            'blocks_1': {'w': 1.0}, 'norm': {'scale': 1.0}}
  m = mae.layer_decay_multipliers(params, depth=2, decay=0.5)
  assert m == {'patch_embed': {'proj': {'kernel': 0.125}}, 'blocks_0': {'w': 0.25},
               'blocks_1': {'w': 0.5}, 'norm': {'scale': 1.0}}
  upd, _ = mae.scale_by_layer_decay(m).update(params, None)
  assert upd['blocks_0']['w'] == 0.25


# ----------------------------------------------------------------------------- SimMIM

def simmim_one_vs_eight(c, steps=2):
  """Runs ``steps`` SimMIM steps on 1 and on 8 devices, checks they agree; returns the 1-device
  (state, history)."""
  state1, hist1 = helpers.run_steps(c, 1, steps)
  state8, hist8 = helpers.run_steps(c, 8, steps)
  np.testing.assert_allclose([h['loss'] for h in hist1], [h['loss'] for h in hist8], rtol=1e-4)
  helpers.assert_trees_close(state1.params, state8.params, rtol=1e-3, atol=1e-5)
  return state1, hist1


def test_simmim_one_vs_eight_devices():
  c = tiny('simmim')
  assert c.method.mask_patch_size == 8            # 2x2 mask grid over the 4x4 patch grid
  state1, _ = simmim_one_vs_eight(c)
  assert state1.params['mask_token'].shape == (32,)


def test_simmim_norm_targets_and_head_blocks_train_and_check_fields():
  c = tiny('simmim')
  c.method.norm_target_window, c.method.head_depth, c.method.head_heads = 5, 1, 2
  state, hist = helpers.run_steps(c, 1, 2)
  assert np.isfinite(hist[-1]['loss'])
  assert 'blocks_0' in state.params['head']
  c.method.norm_target_window = 4
  with pytest.raises(ValueError, match='norm_target_window=4 must be odd'):
    build_method(c)
  c.method.norm_target_window, c.method.loss = 5, 'l3'
  with pytest.raises(ValueError, match="config.method.loss='l3'"):
    build_method(c)


def test_simmim_swin_predicts_from_the_last_stage_and_masks_it():
  c = tiny('simmim', image_size=16)
  helpers.tiny_swin(c, 8, (1, 1), (2, 2))
  m = build_method(c)      # 8x8 patch tokens -> 4x4 output tokens of 4 px; 2x2 mask grid of 8 px
  assert (m.out_stride, m.out_grid, m.mask_grid, m.scale) == (4, (4, 4), 2, 4)
  mask = simmim_lib.simmim_masks(jax.random.key(0), 3, 2, 4, 0.6)        # (3, 64)
  out = np.asarray(m.output_mask(mask)).reshape(3, 4, 4)
  # each output token takes the mask of the 8 px mask patch it lies in
  small = np.asarray(mask).reshape(3, 8, 8)[:, ::4, ::4]
  np.testing.assert_array_equal(out, np.repeat(np.repeat(small, 2, 1), 2, 2))
  state, hist = simmim_one_vs_eight(c)
  assert np.isfinite(hist[-1]['loss']) and state.params['mask_token'].shape == (8,)
  assert state.params['head']['pred']['kernel'].shape == (16, 4 * 4 * 3)
  batch = sample_batch(c, 4)
  grid = m.reconstruct(state.params, state.buffers, batch['view0'], jax.random.key(1))
  assert grid['reconstruction'].shape == (4, 16, 16, 3)
  # visible pixels are pasted back unchanged, masked ones come from the prediction
  np.testing.assert_allclose(grid['reconstruction'] * (grid['masked'] != 0.5),
                             grid['original'] * (grid['masked'] != 0.5), atol=1e-6)
  c.method.mask_patch_size = 2
  with pytest.raises(ValueError, match='multiple of the backbone output stride 4'):
    build_method(c)
  c = helpers.tiny_swin(tiny('mae', image_size=16), 8, (1, 1), (2, 2))   # MAE's own fields
  with pytest.raises(ValueError, match='MAE needs one of vit_tiny'):
    build_method(c)


# ----------------------------------------------------------------------------- BEiT + tokenizer

@pytest.fixture(scope='module')
def tokenizer_run():
  workdir = tempfile.mkdtemp()
  _, state, hist = train_and_save(tiny('vqvae', steps=2), workdir, 2)
  return workdir, state, hist


def test_beit_missing_tokenizer_is_a_clear_error():
  c = tiny('beit')
  c.method.tokenizer_workdir = os.path.join(tempfile.mkdtemp(), 'nope')
  with pytest.raises(FileNotFoundError, match='configs/vqvae.py'):
    loop.Experiment(c, tempfile.mkdtemp(), helpers.mesh(1))


def test_beit_loads_tokenizer_and_checkpoints_it(tokenizer_run):
  tok_dir, tok_state, hist = tokenizer_run
  assert np.isfinite(hist[-1]['loss']) and hist[-1]['code_perplexity'] >= 1
  c = tiny('beit')
  c.method.tokenizer_workdir = tok_dir
  workdir = tempfile.mkdtemp()
  exp, state, hist = train_and_save(c, workdir, 1)
  assert np.isfinite(hist[0]['loss']) and 0 <= hist[0]['mim_acc'] <= 1
  assert 0 < hist[0]['mask_frac'] <= 0.4 + 1e-6
  helpers.assert_trees_close(state.buffers['tokenizer'], tok_state.params['vqvae'], 0, 0)
  # The frozen tokenizer survives BEiT's own checkpoint exactly (no need for tok_dir on resume).
  exp2 = loop.Experiment(c, workdir, helpers.mesh(1))
  restored, _ = exp2.restore_or_init()
  exp2.checkpointer.close()
  assert int(restored.step) == 1
  helpers.assert_trees_close(restored.buffers, state.buffers, 0, 0)
  helpers.assert_trees_close(restored.params, state.params, 0, 0)


def test_beit_targets_are_tokenizer_codes():
  c = tiny('beit')
  c.method.tokenizer_random_init = True
  method = build_method(c)
  batch = sample_batch(c, 4)
  params, buffers = method.init(jax.random.PRNGKey(0), batch)
  x = method.normalize(batch['view0'])
  idx = method.targets(buffers, x)
  assert idx.shape == (4, 16) and idx.dtype == jnp.int32
  z = method.tokenizer.apply({'params': buffers['tokenizer']}, x,
                             method=lambda m, x: m.encoder(x))
  z = np.asarray(z / np.linalg.norm(z, axis=-1, keepdims=True)).reshape(4, 16, -1)
  cb = np.asarray(buffers['tokenizer']['codebook'])
  cb = cb / np.linalg.norm(cb, axis=-1, keepdims=True)            # builtin tokenizer: l2 codes
  np.testing.assert_array_equal(idx, np.argmax(z @ cb.T, axis=-1))


# ----------------------------------------------------------------------------- MultiMAE

def test_multimae_loss_and_gradients():
  c = tiny('multimae')
  method = build_method(c)
  batch = sample_batch(c, 8)
  params, _ = method.init(jax.random.PRNGKey(0), batch)
  assert set(params) == {'backbone', 'input_adapters', 'decoder'}
  assert params['input_adapters']['input_adapter_1']['proj']['kernel'].shape == (4, 4, 1, 32)
  views = method.views(batch, jax.random.PRNGKey(1))
  assert views['edges'].shape == (8, 16, 16, 1) and method.num_keep == 8   # 25 % of 2 x 16

  class S:  # the loss reads only state.buffers
    buffers = {}

  (loss, (metrics, _)), grads = jax.jit(jax.value_and_grad(
      lambda p: method.loss(p, S, views, jax.random.PRNGKey(2)), has_aux=True))(params)
  np.testing.assert_allclose(loss, metrics['loss_rgb'] + metrics['loss_edges'], rtol=1e-6)
  np.testing.assert_allclose(metrics['visible_frac_rgb'] + metrics['visible_frac_edges'],
                             8 / 16, rtol=1e-6)
  for g in (grads['input_adapters'], grads['decoder']['output_adapter_1'], grads['backbone']):
    assert float(sum(jnp.abs(x).sum() for x in jax.tree_util.tree_leaves(g))) > 0
  assert method.features(params, {}, batch['view0']).shape == (8, 32)
