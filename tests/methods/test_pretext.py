"""Tests for the pretext-task methods (rotation, jigsaw, colorization, CutPaste, PIRL): the image
transforms against numpy, each loss against a hand computation and an independent numpy
implementation, and a few real train steps on 1 vs 8 simulated devices.
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_contrastive.py, tests/losses/test_pretext.py."""
import importlib.util
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.train import loop
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name, arg='builtin'):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}', os.path.join(ROOT, 'configs',
                                                                          f'{name}.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def one_device_run(config, steps=2):
  """(config, state, history) after ``steps`` real train steps on 1 device; finite losses."""
  s1, h1 = helpers.run_steps(config, 1, steps)
  assert all(np.isfinite(h['loss']) for h in h1)
  return config, s1, h1


def parity(config, steps=2):
  """Runs ``steps`` real train steps on 1 and 8 devices; asserts allclose params and losses.
  Returns the 1-device (state, history)."""
  _, s1, h1 = one_device_run(config, steps)
  assert_eight_devices_agree(config, s1, h1)
  return s1, h1


def assert_eight_devices_agree(config, s1, h1):
  s8, h8 = helpers.run_steps(config, 8, len(h1))
  np.testing.assert_allclose([h['loss'] for h in h1], [h['loss'] for h in h8], rtol=1e-4)
  helpers.assert_trees_close(s1.params, s8.params, rtol=2e-3, atol=2e-5)


# The loss of rotation, jigsaw, CutPaste and colorization is a mean of per-example terms (nothing
# crosses examples but BatchNorm), so the default tier compares 1 and 8 devices for rotation (and
# PIRL, whose bank does cross them); the other three compare in the full tier (conftest.py: slow).


# -- rotation ---------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def rotation_run():
  return parity(helpers.tiny(load_config('rotation')), steps=2)


def test_rotation_one_vs_eight_devices(rotation_run):
  state, history = rotation_run
  assert 0.0 <= history[-1]['rotation_acc'] <= 1.0
  # 4-way cross-entropy starts near log 4
  assert abs(history[0]['loss'] - np.log(4)) < 0.7
  assert set(state.params) == {'backbone', 'head'}
  assert state.params['head']['fc1']['kernel'].shape[-1] == 4


# -- jigsaw -----------------------------------------------------------------------------------------

def np_max_hamming(num, num_tiles, start):
  """Algorithm 1 of Noroozi & Favaro (2016) written directly: D = Hamming(P, P_bar), sum over the
  selected rows, take the argmax among the not-yet-selected permutations."""
  import itertools
  all_perms = np.array(list(itertools.permutations(range(num_tiles))))
  chosen = [start]
  while len(chosen) < num:
    d = (all_perms[chosen][:, None, :] != all_perms[None, :, :]).sum(-1).sum(0)
    d[chosen] = -1
    chosen.append(int(np.argmax(d)))
  return all_perms[chosen]


def test_max_hamming_permutations():
  from ssl_jax.methods.pretext import jigsaw
  p = jigsaw.max_hamming_permutations(24, 4, seed=3)
  assert len({tuple(r) for r in p}) == 24          # all 4! permutations, no repeats
  p = jigsaw.max_hamming_permutations(6, 4, seed=3)
  # hand: the second pick is at Hamming distance 4 (a derangement) from the first
  assert (p[0] != p[1]).sum() == 4
  import itertools
  start = [tuple(r) for r in itertools.permutations(range(4))].index(tuple(p[0]))
  np.testing.assert_array_equal(p, np_max_hamming(6, 4, start))
  p9 = jigsaw.max_hamming_permutations(5, 9, seed=0)
  start9 = [tuple(r) for r in itertools.permutations(range(9))].index(tuple(p9[0]))
  np.testing.assert_array_equal(p9, np_max_hamming(5, 9, start9))
  # five 9-tile permutations can all be mutual derangements (Hamming 9)
  d = (p9[:, None] != p9[None]).sum(-1)
  assert d[~np.eye(5, dtype=bool)].min() == 9


def test_cut_and_permute_tiles():
  from ssl_jax.methods.pretext import jigsaw
  x = np.arange(2 * 6 * 6 * 1, dtype=np.float32).reshape(2, 6, 6, 1)
  tiles = jigsaw.cut_tiles(jax.random.PRNGKey(0), jnp.asarray(x), grid=3, tile_size=2)
  assert tiles.shape == (2, 9, 2, 2, 1)
  np.testing.assert_array_equal(tiles[0, 4], x[0, 2:4, 2:4])   # tile == cell when no gap
  tiles = jigsaw.cut_tiles(jax.random.PRNGKey(0), jnp.asarray(x), grid=2, tile_size=2)
  for b in range(2):
    for t in range(4):
      cy, cx = divmod(t, 2)
      cell = x[b, 3 * cy:3 * cy + 3, 3 * cx:3 * cx + 3, 0]
      tile = np.asarray(tiles[b, t, :, :, 0])
      assert any(np.array_equal(cell[i:i + 2, j:j + 2], tile) for i in range(2) for j in range(2))
  perms = jnp.array([[1, 0, 3, 2], [3, 2, 1, 0]])
  out = jigsaw.permute_tiles(tiles, perms)
  np.testing.assert_array_equal(out[0, 0], tiles[0, 1])
  np.testing.assert_array_equal(out[1, 0], tiles[1, 3])
  np.testing.assert_array_equal(out[1, 2], tiles[1, 1])


@pytest.fixture(scope='module')
def jigsaw_run():
  c = helpers.tiny(load_config('jigsaw'), image_size=18)
  c.method.tile_size = 4
  c.method.num_permutations = 10
  c.method.tile_dim = 8
  c.method.head_hidden_dim = 16
  return one_device_run(c)


def test_jigsaw_trains(jigsaw_run):
  _, state, history = jigsaw_run
  assert abs(history[0]['loss'] - np.log(10)) < 1.0
  assert state.params['head']['fc8']['kernel'].shape[-1] == 10


@pytest.mark.slow
def test_jigsaw_one_vs_eight_devices(jigsaw_run):
  assert_eight_devices_agree(*jigsaw_run)


# -- CutPaste ---------------------------------------------------------------------------------------

def test_paste_patch_axis_aligned_and_rotated():
  from ssl_jax.methods.pretext import cutpaste
  img = jnp.zeros((8, 8, 1))
  src = jnp.arange(64, dtype=jnp.float32).reshape(8, 8, 1) + 1
  out, mask = cutpaste.paste_patch(img, src, (2.0, 3.0), (5.0, 5.0), (2.0, 2.0), 0.0)
  out = np.asarray(out)[..., 0]
  np.testing.assert_array_equal(out[4:6, 4:6], np.asarray(src)[1:3, 2:4, 0])
  assert np.asarray(mask).sum() == 4 and out.sum() == np.asarray(src)[1:3, 2:4].sum()
  # a 1 x 3 patch rotated by 90 degrees covers a 3 x 1 column
  _, mask = cutpaste.paste_patch(img, src, (2.5, 2.5), (4.5, 4.5), (1.0, 3.0), np.pi / 2)
  ys, xs = np.nonzero(np.asarray(mask))
  assert len(ys) == 3 and len(set(xs)) == 1 and sorted(ys) == [3, 4, 5]


def test_cutpaste_and_scar_sizes():
  from ssl_jax.methods.pretext import cutpaste
  img = jax.random.uniform(jax.random.PRNGKey(0), (32, 32, 3))
  fracs, scars = [], []
  for i in range(20):
    out, mask = cutpaste.cutpaste(jax.random.PRNGKey(i), img, (0.02, 0.15), 0.3, jitter=0.0)
    fracs.append(float(np.asarray(mask).mean()))
    # outside the mask nothing changes
    np.testing.assert_array_equal(np.asarray(out)[~np.asarray(mask)],
                                  np.asarray(img)[~np.asarray(mask)])
    _, smask = cutpaste.cutpaste_scar(jax.random.PRNGKey(i), img, (0.05, 0.1), (0.3, 0.5), 45.0,
                                      jitter=0.0)
    scars.append(int(np.asarray(smask).sum()))
  assert 0.01 < min(fracs) and max(fracs) < 0.2
  # scars: 1.6-3.2 px wide, 9.6-16 px long -> 15..52 px^2 (pixel-grid rounding aside)
  assert 8 <= min(scars) and max(scars) <= 70


@pytest.fixture(scope='module')
def cutpaste_run():
  c = helpers.tiny(load_config('cutpaste'))
  return one_device_run(c)


def test_cutpaste_trains(cutpaste_run):
  _, state, history = cutpaste_run
  assert abs(history[0]['loss'] - np.log(3)) < 0.7
  assert state.params['head']['fc1']['kernel'].shape[-1] == 3


@pytest.mark.slow
def test_cutpaste_one_vs_eight_devices(cutpaste_run):
  assert_eight_devices_agree(*cutpaste_run)


# -- anomaly evaluation -----------------------------------------------------------------------------

def test_auroc_hand_and_sklearn():
  from sklearn.metrics import roc_auc_score
  from ssl_jax.eval import anomaly
  # pairs (anomaly, normal): (0.35 > 0.1), (0.35 < 0.4), (0.8 > both) -> 3 / 4
  assert anomaly.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
  assert anomaly.auroc([1.0, 1.0], [0, 1]) == 0.5
  rng = np.random.default_rng(0)
  s = np.round(rng.normal(size=200), 1)       # with ties
  y = rng.uniform(size=200) < 0.3
  np.testing.assert_allclose(anomaly.auroc(s, y), roc_auc_score(y, s), rtol=1e-12)


def test_gaussian_density_is_mahalanobis():
  from scipy.spatial.distance import mahalanobis
  from sklearn.covariance import ledoit_wolf
  from ssl_jax.eval import anomaly
  rng = np.random.default_rng(0)
  train = rng.normal(size=(300, 5)) * [1, 2, 3, 1, 1] + 4
  test = rng.normal(size=(10, 5)) + 4
  gde = anomaly.GaussianDensity().fit(train)
  n = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  mu, cov = n(train).mean(0), ledoit_wolf(n(train))[0]
  ref = [mahalanobis(x, mu, np.linalg.inv(cov)) for x in n(test)]
  np.testing.assert_allclose(gde.score(test), ref, rtol=1e-6)
  far = (rng.normal(size=(10, 5)) * 0.1 + [-4, 4, -4, 4, 4])
  assert gde.score(far).min() > np.max(ref)


def test_builtin_anomaly_set():
  import ml_collections
  from ssl_jax.eval import anomaly
  cfg = ml_collections.ConfigDict({'source': 'builtin', 'name': 'digits'})
  images, is_anom, kinds = anomaly.builtin_anomaly_set(cfg, 'test')
  assert images.shape == (359, 8, 8, 3) and is_anom.sum() == 179   # every other image
  assert set(kinds[is_anom]) == set(anomaly.DEFECTS)
  clean = anomaly.sources.get_source(cfg, 'test')
  np.testing.assert_array_equal(images[0], clean[0]['image'])
  changed = [np.any(images[i] != clean[i]['image']) for i in np.flatnonzero(is_anom)]
  assert np.mean(changed) > 0.95


# -- colorization -----------------------------------------------------------------------------------

def np_rgb_to_lab(rgb):
  """sRGB -> Lab from the CIE definitions (independent of the jnp code path)."""
  rgb = np.asarray(rgb, np.float64)
  out = []
  for r, g, b in rgb.reshape(-1, 3):
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    x = (0.412453 * lin[0] + 0.357580 * lin[1] + 0.180423 * lin[2]) / 0.95047
    y = 0.212671 * lin[0] + 0.715160 * lin[1] + 0.072169 * lin[2]
    z = (0.019334 * lin[0] + 0.119193 * lin[1] + 0.950227 * lin[2]) / 1.08883
    f = lambda t: t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29
    out.append([116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))])
  return np.array(out).reshape(rgb.shape)


def test_lab_and_bins():
  from ssl_jax.methods.pretext import colorization as col
  # published values: sRGB red = Lab(53.24, 80.09, 67.20), white = (100, 0, 0)
  lab = np.asarray(col.rgb_to_lab(jnp.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])))
  np.testing.assert_allclose(lab[0], [53.24, 80.09, 67.20], atol=0.02)
  np.testing.assert_allclose(lab[1], [100.0, 0.0, 0.0], atol=0.01)
  x = np.random.default_rng(0).uniform(size=(50, 3))
  np.testing.assert_allclose(col.rgb_to_lab(jnp.asarray(x, jnp.float32)), np_rgb_to_lab(x),
                             atol=2e-3)
  centres = col.ab_gamut_bins()
  assert 240 <= len(centres) <= 313 and np.all(centres % 10 == 0)
  assert [0.0, 0.0] in centres.tolist() and [80.0, 70.0] in centres.tolist()


def test_soft_encode_and_rebalance():
  from ssl_jax.methods.pretext import colorization as col
  centres = np.array([[0, 0], [10, 0], [0, 10], [-10, 0], [0, -10], [10, 10]], np.float32)
  z = np.asarray(col.soft_encode(jnp.array([[0.0, 0.0]]), jnp.asarray(centres), 5, 5.0))[0]
  # hand: distance 0 -> weight 1, four at distance 10 -> exp(-100/50) each, the corner gets 0
  e = np.exp(-2.0)
  np.testing.assert_allclose(z, [1 / (1 + 4 * e)] + [e / (1 + 4 * e)] * 4 + [0.0], rtol=1e-5)
  prior = np.array([0.9, 0.1, 0.0, 0.0, 0.0, 0.0])
  w = col.rebalance_weights(prior, centres, lam=0.5, sigma=1e-3)   # sigma ~ 0: no smoothing
  ref = 1 / (0.5 * prior + 0.5 / 6)
  np.testing.assert_allclose(w, ref / (prior * ref).sum(), rtol=1e-5)
  assert w[0] < w[1] < w[2]                       # rarer colours weigh more
  np.testing.assert_allclose((prior * w).sum(), 1.0, rtol=1e-5)


@pytest.fixture(scope='module')
def colorization_run():
  c = helpers.tiny(load_config('colorization'))
  c.method.decoder_dim = 8
  c.method.prior_images = 20
  return one_device_run(c)


def test_colorization_trains(colorization_run):
  _, state, history = colorization_run
  assert state.params['decoder']['logits']['kernel'].shape[-1] > 200
  assert np.isfinite(history[-1]['loss']) and history[-1]['loss'] > 0


@pytest.mark.slow
def test_colorization_one_vs_eight_devices(colorization_run):
  assert_eight_devices_agree(*colorization_run)


def test_colorization_features_see_only_lightness(colorization_run):
  """Evaluation features of a colour image equal those of its grey (luma) version."""
  from ssl_jax import methods  # pylint: disable=g-import-not-at-top
  c, state, _ = colorization_run
  method = methods.build_method(c)
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
  luma = np.round(rgb @ np.array([0.299, 0.587, 0.114]))
  grey = np.repeat(luma[..., None], 3, -1).astype(np.uint8)
  f = lambda x: np.asarray(method.features(state.params, state.buffers, jnp.asarray(x)))
  np.testing.assert_allclose(f(rgb), f(grey), atol=0.05 * np.abs(f(grey)).max())
  assert not np.allclose(f(rgb), f(rgb[:, ::-1]), atol=1e-3)  # and they do depend on the image


def test_colorization_eval_reads_no_training_data(colorization_run):
  """The rebalancing prior is read when training first needs it: a colorization run's method
  builds, and gives features, with its training split unreadable (as eval / export of a run whose
  data is gone)."""
  from ssl_jax import methods  # pylint: disable=g-import-not-at-top
  c, state, _ = colorization_run
  c = c.copy_and_resolve_references()
  c.data.train_split = 'no_such_split'
  method = methods.build_method(c)
  img = np.zeros((2, 16, 16, 3), np.uint8)
  assert np.all(np.isfinite(np.asarray(method.features(state.params, state.buffers, img))))
  with pytest.raises(ValueError, match='no_such_split'):
    method.class_weights   # pylint: disable=pointless-statement


def test_mnist5k_color_hue_follows_the_class():
  import colorsys  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  src = sources.builtin_source('mnist5k_color', 'test')
  grey = sources.builtin_source('mnist5k', 'test')
  assert src.images.shape == grey.images.shape and (src.labels == grey.labels).all()
  for i in range(0, len(src), 97):
    img, label = src.images[i].astype(float) / 255, src.labels[i]
    y, x = np.unravel_index(np.argmax(grey.images[i][..., 0]), img.shape[:2])
    h, s, v = colorsys.rgb_to_hsv(*img[y, x])
    d = abs(h - label / 10.0)
    assert min(d, 1 - d) < 0.035, (i, label, h)
    assert s >= 0.69 and abs(v - grey.images[i][y, x, 0] / 255) < 0.01


# -- PIRL -------------------------------------------------------------------------------------------

def pirl_config():
  c = helpers.tiny(load_config('pirl'), image_size=18)
  c.method.tile_size = 4
  c.method.proj_dim = 8
  c.method.num_negatives = 32
  return c


@pytest.fixture(scope='module')
def pirl_run():
  return parity(pirl_config(), steps=2)


def test_pirl_one_vs_eight_devices_and_bank_update(pirl_run):
  state, history = pirl_run
  bank = np.asarray(state.buffers['bank'])
  assert bank.shape == (4000, 8)
  np.testing.assert_allclose(np.linalg.norm(bank, axis=1), 1.0, rtol=1e-5)
  init_bank = np.asarray(loop.Experiment(pirl_config(), tempfile.mkdtemp(),
                                                 helpers.mesh(1)).initial_state().buffers['bank'])
  changed = np.flatnonzero(np.any(np.abs(bank - init_bank) > 1e-6, axis=1))
  assert 16 <= len(changed) <= 32          # two steps of 16 images (a repeat is possible)
  assert history[0]['loss'] > 0


def test_pirl_bank_survives_checkpoint(tmp_path):
  from ssl_jax.train import sharding
  config = pirl_config()
  exp = loop.Experiment(config, str(tmp_path), helpers.mesh(1))
  state, _ = exp.restore_or_init()
  it = iter(exp.train_ds.to_iter_dataset())
  for _ in range(2):
    state, _ = exp.step_fn(state, sharding.global_batch(exp.mesh, next(it)))
  saved_bank = np.asarray(state.buffers['bank'])
  exp.save(state, it, force=True)
  exp.checkpointer.close()
  exp2 = loop.Experiment(config, str(tmp_path), helpers.mesh(1))
  restored, _ = exp2.restore_or_init()
  exp2.checkpointer.close()
  assert int(restored.step) == 2
  np.testing.assert_array_equal(np.asarray(restored.buffers['bank']), saved_bank)
