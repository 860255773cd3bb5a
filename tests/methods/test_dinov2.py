"""DINOv2: KoLeo and Sinkhorn-Knopp alone against hand-computed cases, the combined loss against
its formula (numpy, inside the method too), untied heads, masks on global crops only, loss and
gradients on 1 vs 8 devices, layer-wise lr factors, checkpoint restore. A tiny ViT (D=32, depth 2,
16 px globals = 4x4 patches, 8 px locals), one train-step compile."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import dinov2 as dinov2_config
from ssl_jax import losses
from ssl_jax.methods.distillation import dinov2
from ssl_jax.models.vit import ViT
from ssl_jax.train import loop
from ssl_jax.train.state import TrainState
from tests import helpers
from tests.losses.test_distillation import np_log_softmax, np_softmax
from tests.methods.test_dino import STEPS, run_and_checkpoint

B, K, KP, N = 16, 64, 48, 16   # batch, [CLS] / patch prototypes, patches per global crop


def tiny_config(centering='sinkhorn_knopp'):
  c = helpers.tiny(dinov2_config.get_config('builtin'), image_size=16, batch_size=B, steps=STEPS)
  m = c.method
  m.local_crop_size, m.num_local_crops = 8, 2
  m.out_dim, m.patch_out_dim = K, KP          # different widths: the heads cannot be one
  m.hidden_dim, m.bottleneck_dim, m.patch_bottleneck_dim = 32, 16, 8
  m.centering = centering
  m.mask_bank_size, m.mask_min_patches = 64, 2
  m.mask_prob, m.mask_ratio_range = 0.75, (0.2, 0.5)
  m.teacher_temp = m.warmup_teacher_temp = 0.05
  m.koleo_weight = 0.3                        # not the default: the weight must really enter
  m.ibot_weight = 0.7
  m.layer_decay, m.patch_embed_lr_mult = 0.8, 0.5
  # The builtin's BatchNorm heads off: the formula tests recompute the heads from params alone.
  # The BN head is DINO's head class (tests/methods/test_dino.py checks its batch statistics on 1
  # vs 8 devices); DINOv2 with it matched on 1 vs 8 devices to 2.7e-6 absolute (stop 40).
  m.use_bn_in_head = False
  return c


# -- numpy references ------------------------------------------------------------------------------
def np_koleo(x):
  """Sablayrolles et al. 2019: -mean_i log min_{j != i} ||x_i/|x_i| - x_j/|x_j|||, brute force."""
  x = x / np.linalg.norm(x, axis=-1, keepdims=True)
  d = [min(np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if j != i) for i in range(len(x))]
  return -np.mean(np.log(d))


def np_sinkhorn(logits, temp, iterations=3, valid=None):
  """DINOv2's sinkhorn_knopp_teacher, in float64 (rows of the result = samples)."""
  valid = np.ones(len(logits), bool) if valid is None else valid
  q = np.where(valid[:, None], np.exp((logits - logits[valid].max()) / temp), 0.0).T  # (K, B)
  n_proto, n = q.shape[0], valid.sum()
  q /= q.sum()
  for _ in range(iterations):
    q /= q.sum(axis=1, keepdims=True)
    q /= n_proto
    q /= np.maximum(q.sum(axis=0, keepdims=True), 1e-300)
    q /= n
  return (q * n).T


def np_multicrop_ce(student, teacher_probs, student_temp):
  total, terms = 0.0, 0
  for q in range(teacher_probs.shape[0]):
    for v in range(student.shape[0]):
      if v != q:
        total += np.sum(-teacher_probs[q] * np_log_softmax(student[v] / student_temp), -1).mean()
        terms += 1
  return total / terms


def np_patch_ce(student, teacher_probs, masks, student_temp):
  ce = np.sum(-teacher_probs * np_log_softmax(student / student_temp), -1)
  m = masks.astype(np.float64)
  return np.mean(np.sum(np.where(m > 0, ce, 0.0), -1) / np.maximum(m.sum(-1), 1.0))


# -- the regularisers alone ------------------------------------------------------------------------
def test_koleo_on_four_points_by_hand():
  # Normalised: e0, e1, -e0, (e0 + e1)/sqrt2. Nearest-neighbour distances: e0, e1 and the diagonal
  # are sqrt(2 - sqrt2) from each other's nearest (45 degrees); -e0 is sqrt2 from e1 (90 degrees).
  x = np.array([[3.0, 0.0], [0.0, 0.5], [-2.0, 0.0], [1.0, 1.0]])
  d45, d90 = np.sqrt(2 - np.sqrt(2)), np.sqrt(2)
  expected = -(3 * np.log(d45) + np.log(d90)) / 4
  np.testing.assert_allclose(losses.koleo_loss(jnp.asarray(x, jnp.float32)), expected, rtol=1e-5)
  np.testing.assert_allclose(expected, np_koleo(x), rtol=1e-12)
  rng = np.random.default_rng(0)
  y = rng.normal(size=(7, 5))
  np.testing.assert_allclose(losses.koleo_loss(jnp.asarray(y, jnp.float32)), np_koleo(y),
                             rtol=1e-5)
  # Spreading: the gradient step moves the closest pair apart; duplicates stay finite.
  g = jax.grad(losses.koleo_loss)(jnp.asarray(x, jnp.float32))
  assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0
  dup = losses.koleo_loss(jnp.asarray([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
  assert np.isfinite(float(dup)) and float(dup) > 5   # -log(eps)-sized, not inf


def test_sinkhorn_knopp_marginals_and_hand_case():
  # 2x2 symmetric scores: exp(S) is already balanced, so the codes are the row softmax.
  s = 0.7
  codes = losses.sinkhorn_knopp_targets(jnp.asarray([[0.0, s], [s, 0.0]]), 1.0)
  expected = np.array([[1.0, np.exp(s)], [np.exp(s), 1.0]]) / (1 + np.exp(s))
  np.testing.assert_allclose(codes, expected, rtol=1e-6)
  # Every sample prefers prototype 0: softmax puts ~90 % of the mass there; SK balances the
  # prototypes to B/K each while each sample's code still sums to 1.
  scores = np.array([[2.0, 0.0], [2.0, 0.1], [1.9, 0.0], [0.0, 0.0]])
  soft = np_softmax(scores)
  assert soft[:, 0].sum() > 3.0
  codes = np.asarray(losses.sinkhorn_knopp_targets(jnp.asarray(scores, jnp.float32), 1.0, 3))
  np.testing.assert_allclose(codes, np_sinkhorn(scores, 1.0, 3), rtol=1e-5)
  np.testing.assert_allclose(codes.sum(1), 1.0, rtol=1e-6)           # columns of Q: exact
  np.testing.assert_allclose(codes.sum(0), [2.0, 2.0], atol=0.05)    # rows of Q: 3 iterations
  many = np.asarray(losses.sinkhorn_knopp_targets(jnp.asarray(scores, jnp.float32), 1.0, 200))
  np.testing.assert_allclose(many.sum(0), [2.0, 2.0], rtol=1e-4)
  # Leading axes are samples; ``valid`` restricts them (DINOv2's masked patches): B = #valid.
  rng = np.random.default_rng(1)
  t = rng.normal(size=(2, 3, 4, 5)) * 2
  valid = rng.random((2, 3, 4)) < 0.4
  got = np.asarray(losses.sinkhorn_knopp_targets(jnp.asarray(t, jnp.float32), 0.5, 3,
                                                 valid=jnp.asarray(valid)))
  ref = np_sinkhorn(t.reshape(-1, 5), 0.5, 3, valid.reshape(-1)).reshape(t.shape)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-7)
  assert np.all(got[~valid] == 0)
  none = losses.sinkhorn_knopp_targets(jnp.asarray(t, jnp.float32), 0.5, 3,
                                       valid=jnp.zeros((2, 3, 4), bool))
  assert np.all(np.asarray(none) == 0)   # no masked patch at all: zero codes, not NaN


def test_dinov2_loss_against_formula():
  rng = np.random.default_rng(2)
  s_cls, t_cls = rng.normal(size=(4, 5, 6)), rng.normal(size=(2, 5, 6))
  s_patch, t_patch = rng.normal(size=(2, 5, 3, 7)), rng.normal(size=(2, 5, 3, 7))
  masks = rng.random((2, 5, 3)) < 0.5
  feats = rng.normal(size=(2, 5, 8))
  probs = np_softmax(t_cls / 0.05)
  pprobs = np_softmax(t_patch / 0.05)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  loss, parts = losses.dinov2_loss(f32(s_cls), f32(probs), f32(s_patch), f32(pprobs),
                                   jnp.asarray(masks), f32(feats), 0.1, 0.5, 0.7, 0.3)
  dino = np_multicrop_ce(s_cls, probs, 0.1)
  ibot = np_patch_ce(s_patch, pprobs, masks, 0.1)
  koleo = np_koleo(feats[0]) + np_koleo(feats[1])
  np.testing.assert_allclose([parts['dino_loss'], parts['ibot_loss'], parts['koleo_loss']],
                             [dino, ibot, koleo], rtol=1e-5)
  np.testing.assert_allclose(loss, 0.5 * dino + 0.7 * ibot + 0.3 * koleo, rtol=1e-5)


def test_lr_factors_per_layer():
  tree = {'backbone': {'patch_embed': {'proj': {'kernel': 0}}, 'cls_token': 0, 'pos_embed': 0,
                       'register_tokens': 0, 'blocks_0': {'attn': {'qkv': {'kernel': 0}}},
                       'blocks_1': {'mlp': {'fc1': {'bias': 0}}}, 'norm': {'scale': 0}},
          'mask_token': 0, 'dino_head': {'fc0': {'kernel': 0}}, 'ibot_head': {'fc0': {'bias': 0}}}
  f = dinov2.lr_multipliers(tree, depth=2, layer_decay=0.5, patch_embed_mult=0.2)
  bb = f['backbone']
  assert bb['patch_embed']['proj']['kernel'] == pytest.approx(0.125 * 0.2)
  assert bb['cls_token'] == bb['pos_embed'] == bb['register_tokens'] == f['mask_token'] == 0.125
  assert bb['blocks_0']['attn']['qkv']['kernel'] == 0.25
  assert bb['blocks_1']['mlp']['fc1']['bias'] == 0.5
  assert bb['norm']['scale'] == f['dino_head']['fc0']['kernel'] == f['ibot_head']['fc0']['bias'] == 1


def test_imagenet_recipes():
  hp = lambda arg: dinov2.DINOv2.Hparams(**{k: v for k, v in
                                            dinov2_config.get_config(arg).method.items()
                                            if k != 'name'})
  s, g = hp('imagenet'), hp('imagenet,vit_giant')
  assert (s.momentum, s.weight_decay_end, s.layer_decay, s.centering) == (
      0.992, 0.2, 0.9, 'sinkhorn_knopp')
  assert (s.warmup_teacher_temp, s.teacher_temp, s.koleo_weight) == (0.04, 0.07, 0.1)
  assert (g.out_dim, g.momentum, g.layer_decay) == (131072, 0.994, 1.0)
  c = dinov2_config.get_config('imagenet,vit_giant')
  assert (c.model.patch_size, c.model.mlp, c.model.layerscale_init) == (14, 'swiglu', 1e-5)
  h = dinov2_config.get_config('highres,vit_large')
  assert (h.data.image_size, h.model.img_size) == (518, 224)


def test_running_center_option():
  """centering='center': DINO's centred softmax with the *old* centers, new centers returned
  (c <- 0.9 c + 0.1 mean), for [CLS] and patches alike."""
  method = dinov2.DINOv2(tiny_config('center'))
  rng = np.random.default_rng(3)
  t_cls, t_patch = rng.normal(size=(2, 3, K)), rng.normal(size=(2, 3, N, KP))
  c, pc = rng.normal(size=(1, K)) * 0.1, rng.normal(size=(1, KP)) * 0.1
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  probs, pprobs, new = method.teacher_targets({'center': f32(c), 'patch_center': f32(pc)},
                                              f32(t_cls), f32(t_patch), None, 0.05)
  np.testing.assert_allclose(probs, np_softmax((t_cls - c) / 0.05), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(pprobs, np_softmax((t_patch - pc) / 0.05), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(new['center'], 0.9 * c + 0.1 * t_cls.reshape(-1, K).mean(0),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(new['patch_center'],
                             0.9 * pc + 0.1 * t_patch.reshape(-1, KP).mean(0), rtol=1e-5,
                             atol=1e-7)


# -- inside the method -----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def one_device(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('dinov2'))
  exp, state, history = run_and_checkpoint(tiny_config(), workdir)
  return workdir, exp, state, history


@pytest.fixture(scope='module')
def parts_and_grads(one_device):
  """One jitted function: the Jacobian of (dino, ibot, koleo) w.r.t. the params and the metrics."""
  method = one_device[1].method

  def terms(params, st, views, rng):
    _, (metrics, _) = method.loss(params, st, views, rng)
    vec = jnp.stack([metrics['dino_loss'], metrics['ibot_loss'], metrics['koleo_loss']])
    return vec, metrics
  return jax.jit(jax.jacrev(terms, has_aux=True))


@pytest.fixture(scope='module')
def step_inputs(one_device):
  _, exp, state, _ = one_device
  st = TrainState.create(params=state.params, tx=exp.tx, buffers=state.buffers)
  st = st.replace(step=jnp.asarray(STEPS, jnp.int32))
  views = jax.jit(exp.method.views)(exp.train_ds[STEPS], jax.random.PRNGKey(0))
  return st, jax.device_get(views)


def test_loss_inside_the_method_matches_the_formula(one_device, parts_and_grads, step_inputs):
  """Student: masked global crops (all tokens), *unmasked* local crops ([CLS]); teacher: unmasked
  global crops; SK codes over the global batch (patch codes over the masked patches); KoLeo on the
  backbone's global [CLS] features; weights 1 / 0.7 / 0.3."""
  _, exp, _, _ = one_device
  method = exp.method
  st, views = step_inputs
  masks = np.asarray(views['masks'])
  # Masks for the two global crops only (N = their 4x4 patches); local crops have none.
  assert set(views) == {'global0', 'global1', 'local0', 'local1', 'masks'}
  assert masks.shape == (2, B, N)
  assert 0 < masks.mean() < 0.5 and (masks.sum(-1) == 0).any()   # some images are not masked
  _, metrics = parts_and_grads(st.params, st, views, jax.random.PRNGKey(1))

  @jax.jit
  def logits(params, teacher, views):
    g = jnp.concatenate([views['global0'], views['global1']])
    enc = method.backbone.apply({'params': params['backbone']}, g, mask=views['masks'].reshape(
        2 * B, -1), mask_token=params['mask_token'], method=ViT.encode)
    loc = jnp.concatenate([method.backbone.apply({'params': params['backbone']}, views[k])
                           for k in ('local0', 'local1')])
    dino = lambda p, x: method.head.apply({'params': p['dino_head']}, x)
    ibot = lambda p, x: method.ibot_head.apply({'params': p['ibot_head']}, x)
    t_enc = method.backbone.apply({'params': teacher['backbone']}, g, method=ViT.encode)
    cls = enc['tokens'][:, 0]
    return (dino(params, jnp.concatenate([cls, loc])), ibot(params, enc['tokens'][:, 1:]), cls,
            dino(teacher, t_enc['tokens'][:, 0]), ibot(teacher, t_enc['tokens'][:, 1:]))

  s_cls, s_patch, feats, t_cls, t_patch = (
      np.asarray(a, np.float64)
      for a in logits(st.params, st.buffers['teacher']['params'], views))
  assert s_cls.shape == (4 * B, K) and s_patch.shape == (2 * B, N, KP)
  temp = 0.05
  probs = np_sinkhorn(t_cls, temp).reshape(2, B, K)
  pprobs = np_sinkhorn(t_patch.reshape(-1, KP), temp, valid=masks.reshape(-1)).reshape(2, B, N, KP)
  dino = np_multicrop_ce(s_cls.reshape(4, B, K), probs, 0.1)
  ibot = np_patch_ce(s_patch.reshape(2, B, N, KP), pprobs, masks, 0.1)
  koleo = np_koleo(feats[:B]) + np_koleo(feats[B:])
  np.testing.assert_allclose([metrics['dino_loss'], metrics['ibot_loss'], metrics['koleo_loss']],
                             [dino, ibot, koleo], rtol=2e-4)
  loss, _ = jax.jit(method.loss)(st.params, st, views, jax.random.PRNGKey(1))
  np.testing.assert_allclose(loss, dino + 0.7 * ibot + 0.3 * koleo, rtol=2e-4)


def test_heads_are_untied(one_device, parts_and_grads, step_inputs):
  """Separate parameters (and teacher copies); the DINO loss trains only the DINO head, the iBOT
  loss only the iBOT head, KoLeo neither; all three reach the backbone."""
  _, exp, state, _ = one_device
  st, views = step_inputs
  assert set(state.params) == {'backbone', 'dino_head', 'ibot_head', 'mask_token'}
  assert set(state.buffers['teacher']['params']) == {'backbone', 'dino_head', 'ibot_head'}
  assert state.params['dino_head']['last_layer_v'].shape[-1] == K
  assert state.params['ibot_head']['last_layer_v'].shape[-1] == KP
  jac, _ = parts_and_grads(st.params, st, views, jax.random.PRNGKey(1))
  norm = lambda tree, i: max(float(np.abs(np.asarray(x[i])).max())
                             for x in jax.tree_util.tree_leaves(tree))
  dino, ibot, koleo = 0, 1, 2
  assert norm(jac['dino_head'], dino) > 0 and norm(jac['dino_head'], ibot) == 0
  assert norm(jac['ibot_head'], ibot) > 0 and norm(jac['ibot_head'], dino) == 0
  assert norm(jac['dino_head'], koleo) == 0 and norm(jac['ibot_head'], koleo) == 0
  assert all(norm(jac['backbone'], i) > 0 for i in (dino, ibot, koleo))
  assert norm(jac['mask_token'], ibot) > 0   # the mask token is used (global crops masked)


def test_one_vs_eight_devices(one_device, parts_and_grads, step_inputs):
  """SK codes and KoLeo neighbours are global-batch statistics: the loss terms and their gradients
  on a batch sharded over 8 devices equal the 1-device ones."""
  st, views = step_inputs
  jac1, m1 = parts_and_grads(st.params, st, views, jax.random.PRNGKey(1))
  mesh = helpers.mesh(8)
  spec = lambda k: P(None, 'data') if k == 'masks' else P('data')
  views8 = {k: jax.device_put(v, NamedSharding(mesh, spec(k))) for k, v in views.items()}
  assert len(views8['global0'].sharding.device_set) == 8
  jac8, m8 = parts_and_grads(st.params, st, views8, jax.random.PRNGKey(1))
  for k in ('dino_loss', 'ibot_loss', 'koleo_loss', 'teacher_entropy'):
    np.testing.assert_allclose(m1[k], m8[k], rtol=1e-5, err_msg=k)
  helpers.assert_trees_close(jac1, jac8, rtol=1e-4, atol=1e-6)


def test_training_runs_and_resumes_exactly(one_device):
  workdir, _, state, history = one_device
  assert all(h['nonfinite'] == 0 and h['ibot_loss'] > 0 and h['koleo_loss'] > 0
             for h in history)
  assert 'center' not in state.buffers   # SK centering keeps no running center
  diff = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()),
                                state.params['ibot_head'],
                                state.buffers['teacher']['params']['ibot_head'])
  assert max(jax.tree_util.tree_leaves(diff)) > 0   # the teacher is an EMA, not a copy
  exp = loop.Experiment(tiny_config(), workdir, helpers.mesh(1))
  restored, _ = exp.restore_or_init()
  exp.checkpointer.close()
  assert int(restored.step) == STEPS
  helpers.assert_trees_close(restored.buffers, state.buffers, rtol=0, atol=0)
  helpers.assert_trees_close(restored.params, state.params, rtol=0, atol=0)
