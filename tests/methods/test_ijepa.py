"""I-JEPA: the multi-block collator against the official rules, the loss against hand values, the
predictor's position-tied outputs, the loss against a numpy re-computation, the EMA target encoder,
target-encoder features, and 1 vs 8 devices. A tiny ViT (D=32, depth 1, 16 px = 8x8 patches of
2 px), predictor 32-d x 1 block."""
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ijepa as ijepa_config
from ssl_jax import losses
from ssl_jax.data import masking
from ssl_jax.models.vit import ViT
from ssl_jax.train import loop, sharding
from tests import helpers

STEPS = 2
GRID = 8


def official_block_size(u, grid, scale, aspect):
  """facebookresearch/ijepa MaskCollator._sample_block_size, in plain Python."""
  keep = int(grid * grid * (scale[0] + u * (scale[1] - scale[0])))
  r = aspect[0] + u * (aspect[1] - aspect[0])
  h, w = int(round(math.sqrt(keep * r))), int(round(math.sqrt(keep / r)))
  return min(h, grid - 1), min(w, grid - 1)


def sizes(grid, scale, aspect):
  return {official_block_size(u, grid, scale, aspect) for u in np.linspace(0, 1, 2001)}


# ----------------------------------------------------------------------------- collator

@pytest.fixture(scope='module')
def draws():
  fn = jax.jit(lambda k: masking.multiblock_masks(k, 16, GRID, num_target_tokens=9,
                                                  num_context_tokens=12))
  return fn, [jax.device_get(fn(jax.random.PRNGKey(s))) for s in range(6)]


def bbox(mask):
  rows, cols = np.nonzero(mask.reshape(GRID, GRID))
  return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def test_block_sizes_follow_the_official_rule():
  for u in (0.0, 0.13, 0.5, 0.77, 1.0):
    for grid in (8, 14):
      for scale, aspect in (((0.15, 0.2), (0.75, 1.5)), ((0.85, 1.0), (1.0, 1.0))):
        got = masking.block_size(u, grid, scale, aspect)
        assert tuple(int(v) for v in got) == official_block_size(u, grid, scale, aspect)
  num_t, _ = masking.multiblock_token_counts(14, samples=64)
  assert num_t == min(h * w for h, w in sizes(14, (0.15, 0.2), (0.75, 1.5)))


def test_target_blocks_are_rectangles_of_the_official_sizes(draws):
  _, outs = draws
  allowed = sizes(GRID, (0.15, 0.2), (0.75, 1.5))
  for out in outs:
    shapes = set()
    for b in range(16):
      for mask in out['target_masks'][b]:
        r0, r1, c0, c1 = bbox(mask)
        assert mask.sum() == (r1 - r0) * (c1 - c0)      # a full rectangle
        assert r1 <= GRID - 1 and c1 <= GRID - 1        # official randint(0, H - h): exclusive
        shapes.add((r1 - r0, c1 - c0))
    assert len(shapes) == 1 and shapes <= allowed       # one size per batch, as the official


def test_context_is_a_square_minus_the_targets(draws):
  _, outs = draws
  allowed = sizes(GRID, (0.85, 1.0), (1.0, 1.0))
  assert all(h == w for h, w in allowed)
  for out in outs:
    for b in range(16):
      ctx = out['context_mask'][b]
      union = out['target_masks'][b].any(0)
      assert not np.any(ctx & union)
      r0, r1, c0, c1 = bbox(ctx | union)
      assert r1 <= GRID - 1 and c1 <= GRID - 1


def test_ids_are_the_first_tokens_in_raster_order_and_disjoint(draws):
  _, outs = draws
  for out in outs:
    for b in range(16):
      union = out['target_masks'][b].any(0)
      ctx_ids = out['context_ids'][b]
      ctx_pos = np.flatnonzero(out['context_mask'][b])
      assert not union[ctx_ids].any()                   # the context never sees a target patch
      assert set(ctx_ids) <= set(ctx_pos)
      if len(ctx_pos) >= 12:
        np.testing.assert_array_equal(ctx_ids, ctx_pos[:12])
      for m, ids in zip(out['target_masks'][b], out['target_ids'][b]):
        np.testing.assert_array_equal(ids, np.flatnonzero(m)[:9])


def test_static_shapes_and_determinism(draws):
  fn, outs = draws
  for out in outs:
    assert out['context_ids'].shape == (16, 12) and out['target_ids'].shape == (16, 4, 9)
  again = jax.device_get(fn(jax.random.PRNGKey(0)))
  for k in outs[0]:
    np.testing.assert_array_equal(outs[0][k], again[k])
  assert not np.array_equal(outs[0]['target_ids'], outs[1]['target_ids'])


# ----------------------------------------------------------------------------- loss

def test_loss_hand_values():
  pred = jnp.array([[[0.5, -2.0], [1.0, 0.0]]])
  target = jnp.zeros_like(pred)
  # smooth-L1 (beta 1): 0.5 * 0.25, 2 - 0.5, 1 - 0.5, 0 -> mean of 4 elements
  np.testing.assert_allclose(losses.ijepa_loss(pred, target), (0.125 + 1.5 + 0.5) / 4, rtol=1e-6)
  np.testing.assert_allclose(losses.ijepa_loss(pred, target, 'l2'), (0.25 + 4 + 1) / 4, rtol=1e-6)
  with pytest.raises(ValueError, match='kind'):
    losses.ijepa_loss(pred, target, 'l1')


# ----------------------------------------------------------------------------- method

def tiny_config():
  c = helpers.tiny(ijepa_config.get_config('builtin'), image_size=16, batch_size=16, steps=STEPS)
  c.model.patch_size = 2
  c.model.depth = 1
  m = c.method
  m.pred_dim, m.pred_depth, m.pred_heads = 32, 1, 2
  m.num_target_tokens, m.num_context_tokens = 9, 12
  m.momentum, m.momentum_final = 0.9, 1.0
  # SGD: linear in the gradients, so 1 vs 8 devices agree to float tolerance (see test_data2vec).
  c.optim.name, c.optim.lr = 'sgd', 0.5
  return c


@pytest.fixture(scope='module')
def run():
  """STEPS real steps on one device: (experiment, host copies of the state before every step and
  after the last, per-step metrics)."""
  exp = loop.Experiment(tiny_config(), helpers.tempfile.mkdtemp(), helpers.mesh(1))
  state = exp.initial_state()
  states, history = [jax.device_get(state)], []
  for i in range(STEPS):   # the step donates its input state: copy each to the host first
    state, metrics = exp.step_fn(state, sharding.global_batch(exp.mesh, exp.train_ds[i]))
    states.append(jax.device_get(state))
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return exp, states, states[-1], history


def np_layer_norm(x, eps):
  x = np.asarray(x, np.float64)
  return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)


def test_loss_matches_numpy(run):
  exp, _, state, _ = run
  method = exp.method
  views = jax.jit(method.views)(exp.train_ds[0], jax.random.PRNGKey(0))
  # A final norm far from the identity, so that the extra per-token layer norm of the targets
  # shows (after init and two steps the ViT's own final LayerNorm is nearly parameter-free).
  buffers = jax.tree_util.tree_map(lambda a: a, state.buffers)
  norm = buffers['teacher']['params']['backbone']['norm']
  norm['scale'] = 2.0 * norm['scale'] + np.linspace(0, 1, norm['scale'].shape[0])
  norm['bias'] = norm['bias'] + 0.5
  loss_fn = jax.jit(lambda p, b, v, r: method.loss(p, types.SimpleNamespace(buffers=b, step=2),
                                                   v, r))
  loss, (metrics, _) = loss_fn(state.params, buffers, views, jax.random.PRNGKey(1))
  teacher = method.backbone.apply({'params': buffers['teacher']['params']['backbone']},
                                  views['view0'], method=ViT.encode)['patches']
  h = np_layer_norm(teacher, 1e-5)
  tids = np.asarray(views['target_ids'])
  target = np.stack([h[b][tids[b]] for b in range(16)])            # (B, 4, 9, D)
  pred = np.asarray(method.predict(state.params, views['view0'], views['context_ids'],
                                   views['target_ids']), np.float64)
  assert pred.shape == target.shape == (16, 4, 9, 32)
  d = np.abs(pred - target)
  expect = np.where(d < 1, 0.5 * d ** 2, d - 0.5).mean()
  np.testing.assert_allclose(loss, expect, rtol=1e-4)
  assert metrics['context_tokens'] == 12 and metrics['target_tokens'] == 9


def test_predictor_outputs_are_tied_to_target_positions(run):
  exp, _, state, _ = run
  p = exp.method.predictor
  params = {'params': state.params['predictor']}
  ctx = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 32))
  ctx_ids = jnp.tile(jnp.arange(12), (2, 1))
  tgt = jnp.array([[20, 21, 22, 28, 29, 30], [40, 41, 42, 48, 49, 50]])
  out = p.apply(params, ctx, ctx_ids, tgt)
  assert out.shape == (2, 6, 32)                         # one prediction per target position
  perm = jnp.array([3, 0, 5, 1, 4, 2])
  np.testing.assert_allclose(p.apply(params, ctx, ctx_ids, tgt[:, perm]), out[:, perm],
                             rtol=1e-5, atol=1e-5)       # outputs follow their positions
  moved = p.apply(params, ctx, ctx_ids, tgt.at[:, 0].set(63))
  assert not np.allclose(moved[:, 0], out[:, 0], atol=1e-4)


def test_ema_target_encoder_and_features(run):
  exp, states, state, history = run
  method = exp.method
  # Linear 0.9 -> 1.0 over the run: m(0) = 0.9, m(1) = 0.95, m(2) = 1.
  np.testing.assert_allclose([h['ema_momentum'] for h in history], [0.9, 0.95], rtol=1e-6)
  np.testing.assert_allclose(float(method.momentum_fn(STEPS)), 1.0)
  # t_k = t_{k-1} + (1 - m(k-1)) (s_k - t_{k-1}), from a teacher initialised to the student.
  helpers.assert_trees_close(states[0].buffers['teacher']['params']['backbone'],
                             states[0].params['backbone'], rtol=0, atol=0)
  for k, m in ((1, 0.9), (2, 0.95)):
    prev = states[k - 1].buffers['teacher']['params']['backbone']
    expect = jax.tree_util.tree_map(lambda t, s: t + (1 - m) * (s - t), prev,
                                    states[k].params['backbone'])
    helpers.assert_trees_close(states[k].buffers['teacher']['params']['backbone'], expect, rtol=1e-5,
                               atol=1e-6)
  images = np.asarray(exp.train_ds[0]['view0'][:4])
  feats = method.features(state.params, state.buffers, images)
  x = method.normalize(images)
  t = method.backbone.apply({'params': state.buffers['teacher']['params']['backbone']}, x,
                            method=ViT.encode)['patches'].mean(1)
  np.testing.assert_allclose(feats, t, rtol=1e-5, atol=1e-6)   # target encoder, mean pooled
  assert method.encoder_variables(state.params, state.buffers)['params'] is \
      state.buffers['teacher']['params']['backbone']


def test_one_vs_eight_devices(run):
  _, _, state1, hist1 = run
  state8, hist8 = helpers.run_steps(tiny_config(), 8, STEPS)
  assert all(h['nonfinite'] == 0 for h in hist1)
  for h1, h8 in zip(hist1, hist8):
    np.testing.assert_allclose(h1['loss'], h8['loss'], rtol=1e-5)
  helpers.assert_trees_close(state1.params, state8.params, rtol=1e-4, atol=1e-5)
  helpers.assert_trees_close(state1.buffers, state8.buffers, rtol=1e-4, atol=1e-5)


def test_configs():
  from ssl_jax import config as config_lib
  from ssl_jax import methods
  from ssl_jax.methods.jepa.ijepa import IJEPA
  c = ijepa_config.get_config('imagenet')
  config_lib.validate(c)
  hp = methods.method_hparams(c)
  assert (c.model.embed_dim, c.model.depth, c.model.num_heads, c.model.patch_size) == (
      1280, 32, 16, 14)
  assert (hp.pred_dim, hp.pred_depth, hp.num_targets, hp.loss) == (384, 12, 4, 'smooth_l1')
  assert c.data.batch_size == 2048 and c.optim.lr == 1e-3 and hp.weight_decay_end == 0.4
  c = tiny_config()
  c.method.loss = 'l1'
  with pytest.raises(ValueError, match='config.method.loss'):
    IJEPA(c)
