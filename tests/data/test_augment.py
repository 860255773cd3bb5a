"""Tests for ssl_jax/data/augment.py against PIL / numpy references."""

import colorsys
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from ssl_jax.data import augment as A


def _uint8_image(seed=0, h=16, w=16):
  return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def _float(u8):
  return jnp.asarray(u8, jnp.float32) / 255.0


def _to255(x):
  return np.asarray(x, np.float64) * 255.0


# ---------------------------------------------------------------------------------------
# Deterministic ops against PIL / numpy.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('factor', [0.3, 0.75, 1.4])
def test_brightness_matches_pil(factor):
  u8 = _uint8_image()
  ref = np.asarray(ImageEnhance.Brightness(Image.fromarray(u8)).enhance(factor), np.float64)
  out = _to255(A.adjust_brightness(_float(u8), factor))
  np.testing.assert_allclose(out, ref, atol=1.0)  # PIL rounds to uint8
  assert np.abs(out - ref).mean() < 0.6


@pytest.mark.parametrize('factor', [0.2, 0.6, 1.5])
def test_contrast_matches_pil(factor):
  u8 = _uint8_image(1)
  ref = np.asarray(ImageEnhance.Contrast(Image.fromarray(u8)).enhance(factor), np.float64)
  out = _to255(A.adjust_contrast(_float(u8), factor))
  # PIL blends with the rounded integer mean of the rounded L image.
  np.testing.assert_allclose(out, ref, atol=1.0 + abs(1 - factor))
  assert np.abs(out - ref).mean() < 0.8


def test_contrast_uses_grayscale_mean_not_channel_means():
  # A pure red image: grayscale mean 0.299; per-channel means would leave it unchanged.
  img = jnp.zeros((4, 4, 3)).at[..., 0].set(1.0)
  out = A.adjust_contrast(img, 0.5)
  np.testing.assert_allclose(out[0, 0], [0.5 + 0.5 * 0.299, 0.5 * 0.299, 0.5 * 0.299],
                             atol=1e-6)


@pytest.mark.parametrize('factor', [0.0, 0.5, 1.6])
def test_saturation_matches_pil_color(factor):
  u8 = _uint8_image(2)
  ref = np.asarray(ImageEnhance.Color(Image.fromarray(u8)).enhance(factor), np.float64)
  out = _to255(A.adjust_saturation(_float(u8), factor))
  np.testing.assert_allclose(out, ref, atol=1.0 + 0.5 * abs(1 - factor))
  assert np.abs(out - ref).mean() < 0.8


def _hue_reference(img, delta):
  """torchvision adjust_hue via colorsys: per pixel RGB->HSV, h += delta mod 1, back."""
  out = np.empty_like(img)
  for i, j in itertools.product(range(img.shape[0]), range(img.shape[1])):
    h, s, v = colorsys.rgb_to_hsv(*img[i, j])
    out[i, j] = colorsys.hsv_to_rgb((h + delta) % 1.0, s, v)
  return out


@pytest.mark.parametrize('delta', [-0.5, -0.23, 0.0, 0.1, 0.37])
def test_hue_matches_hsv_roundtrip(delta):
  u8 = _uint8_image(3)
  # Include gray pixels (undefined hue) and saturated primaries.
  u8[0, :4] = [[0, 0, 0], [255, 255, 255], [128, 128, 128], [255, 0, 0]]
  img = u8.astype(np.float64) / 255.0
  ref = _hue_reference(img, delta)
  out = np.asarray(A.adjust_hue(jnp.asarray(img, jnp.float32), delta), np.float64)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  if delta != 0.0:
    assert np.abs(out - img).max() > 0.1


def test_hue_half_turn_on_red_gives_cyan():
  red = jnp.zeros((1, 1, 3)).at[..., 0].set(1.0)
  np.testing.assert_allclose(A.adjust_hue(red, 0.5)[0, 0], [0.0, 1.0, 1.0], atol=1e-6)


def test_grayscale_matches_pil_convert_l():
  u8 = _uint8_image(4)
  ref = np.asarray(Image.fromarray(u8).convert('L'), np.float64)
  out = _to255(A.rgb_to_grayscale(_float(u8)))
  assert out.shape == (16, 16, 3)
  for c in range(3):
    np.testing.assert_allclose(out[..., c], ref, atol=0.5 + 1e-3)  # PIL rounds


def _blur_reference(img, sigma, k, mode):
  """Non-separable 2-D correlation with torchvision's kernel on a numpy-padded image."""
  x = np.arange(k, dtype=np.float64) - (k - 1) / 2
  k1 = np.exp(-0.5 * (x / sigma) ** 2)
  k1 /= k1.sum()
  k2 = np.outer(k1, k1)
  r = k // 2
  pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode='reflect' if mode == 'reflect'
               else 'constant')
  h, w = img.shape[:2]
  out = np.zeros_like(img)
  for di in range(k):
    for dj in range(k):
      out += k2[di, dj] * pad[di:di + h, dj:dj + w]
  return out


@pytest.mark.parametrize('sigma,k,padding', [(0.7, 3, 'reflect'), (1.9, 5, 'reflect'),
                                             (1.2, 7, 'zeros')])
def test_gaussian_blur_matches_numpy_convolution(sigma, k, padding):
  img = _uint8_image(5).astype(np.float64) / 255.0
  ref = _blur_reference(img, sigma, k, padding)
  out = A.apply_gaussian_blur(jnp.asarray(img, jnp.float32), sigma, k, padding)
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


def test_gaussian_kernel_values_and_kernel_size():
  e = np.exp(-0.5)
  np.testing.assert_allclose(A.gaussian_kernel1d(1.0, 3), [e / (1 + 2 * e), 1 / (1 + 2 * e),
                                                           e / (1 + 2 * e)], rtol=1e-6)
  assert A.blur_kernel_size(224) == 23  # BYOL / DINO kernel
  assert A.blur_kernel_size(96) == 9
  assert A.blur_kernel_size(32) == 3
  assert A.blur_kernel_size(16) == 3  # never the identity
  with pytest.raises(ValueError, match='odd'):
    A.apply_gaussian_blur(jnp.zeros((8, 8, 3)), 1.0, 4)


def test_solarize_matches_pil():
  u8 = _uint8_image(6)
  u8[0, :3, 0] = [127, 128, 129]  # around the threshold
  ref = np.asarray(ImageOps.solarize(Image.fromarray(u8), threshold=128), np.float64)
  out = _to255(A.apply_solarize(_float(u8), 0.5))
  np.testing.assert_allclose(out, ref, atol=1e-3)


def test_normalize():
  x = jnp.full((2, 2, 3), 0.5)
  out = A.normalize(x, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
  np.testing.assert_allclose(out[0, 0], [0.8, 1.2, 0.1], rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Random ops.
# ---------------------------------------------------------------------------------------


def test_color_jitter_brightness_only_factor_in_range():
  img = _float(_uint8_image(7)) * 0.5 + 0.1  # keep clear of clipping
  ratios = []
  for s in range(8):
    out = A.color_jitter(jax.random.key(s), img, brightness=0.4, p=1.0)
    r = np.asarray(out / img)
    np.testing.assert_allclose(r, r.flat[0], rtol=1e-5)  # one multiplicative factor
    ratios.append(r.flat[0])
  assert min(ratios) >= 0.6 - 1e-6 and max(ratios) <= 1.4 + 1e-6
  assert max(ratios) - min(ratios) > 0.1


def test_color_jitter_factor_ranges_like_torchvision():
  names, order, f = A.sample_color_jitter(jax.random.key(0), brightness=1.5, contrast=0.4,
                                          saturation=(0.2, 0.3), hue=0.1)
  assert names == ('brightness', 'contrast', 'saturation', 'hue')
  keys = jax.random.split(jax.random.key(1), 500)
  f = np.asarray(jax.vmap(lambda k: A.sample_color_jitter(
      k, brightness=1.5, contrast=0.4, saturation=(0.2, 0.3), hue=0.1)[2])(keys))
  lo = np.array([0.0, 0.6, 0.2, -0.1])  # brightness 1 - 1.5 clipped at 0
  hi = np.array([2.5, 1.4, 0.3, 0.1])
  assert (f >= lo - 1e-6).all() and (f <= hi + 1e-6).all()
  # Uniform: the sample means are near the centres.
  assert (np.abs(f.mean(0) - (lo + hi) / 2) < 0.1 * (hi - lo)).all()
  # Strength 0 switches an op off.
  names, _, _ = A.sample_color_jitter(jax.random.key(0), brightness=0.4, hue=0.0)
  assert names == ('brightness',)


def test_color_jitter_applies_ops_in_sampled_random_order():
  img = _float(_uint8_image(8))
  kw = dict(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)
  fns = dict(brightness=A.adjust_brightness, contrast=A.adjust_contrast,
             saturation=A.adjust_saturation, hue=A.adjust_hue)
  orders = set()
  for s in range(6):
    key = jax.random.key(s)
    names, order, f = A.sample_color_jitter(jax.random.split(key)[1], **kw)
    ref = img
    for i in np.asarray(order):
      ref = fns[names[i]](ref, f[i])
    out = A.color_jitter(key, img, p=1.0, **kw)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    orders.add(tuple(np.asarray(order)))
  assert len(orders) > 1
  # The order matters: contrast-then-brightness != brightness-then-contrast.
  a = A.adjust_contrast(A.adjust_brightness(img, 1.5), 0.5)
  b = A.adjust_brightness(A.adjust_contrast(img, 0.5), 1.5)
  assert np.abs(np.asarray(a - b)).max() > 0.01


def test_color_jitter_under_vmap_matches_the_sequential_order():
  """color_jitter evaluates hue once (before/after phases); under vmap, for every position of hue
  in the sampled order, the result equals the ops applied one by one in that order."""
  img = _float(_uint8_image(8))
  kw = dict(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)
  fns = dict(brightness=A.adjust_brightness, contrast=A.adjust_contrast,
             saturation=A.adjust_saturation, hue=A.adjust_hue)
  keys = jax.random.split(jax.random.key(3), 32)
  out = jax.jit(jax.vmap(lambda k: A.color_jitter(k, img, p=1.0, **kw)))(keys)
  positions = set()
  for key, got in zip(keys, out):
    names, order, f = A.sample_color_jitter(jax.random.split(key)[1], **kw)
    ref = img
    for i in np.asarray(order):
      ref = fns[names[i]](ref, f[i])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    positions.add(int(np.argmax(np.asarray(order) == names.index('hue'))))
  assert positions == {0, 1, 2, 3}


def test_random_ops_p0_identity_p1_always():
  img = _float(_uint8_image(9))
  key = jax.random.key(0)
  for fn, kw in [(A.color_jitter, dict(brightness=0.4, contrast=0.4, hue=0.1)),
                 (A.random_grayscale, {}), (A.gaussian_blur, {}), (A.solarize, {}),
                 (A.random_flip, {})]:
    np.testing.assert_array_equal(fn(key, img, p=0.0, **kw), img)
  np.testing.assert_array_equal(A.random_grayscale(key, img, p=1.0), A.rgb_to_grayscale(img))
  np.testing.assert_array_equal(A.solarize(key, img, p=1.0), A.apply_solarize(img, 0.5))
  np.testing.assert_array_equal(A.random_flip(key, img, p=1.0), img[:, ::-1])


def test_batched_ops_use_independent_per_example_draws():
  img = _float(_uint8_image(10))
  batch = jnp.broadcast_to(img, (4,) + img.shape)
  key = jax.random.key(3)
  blurred = A.gaussian_blur_batch(key, batch, 0.1, 2.0, 5, p=1.0)
  # Different sigma per example -> pairwise different outputs.
  for i, j in itertools.combinations(range(4), 2):
    assert np.abs(np.asarray(blurred[i] - blurred[j])).max() > 1e-3
  # Each example equals the single-image op with its own key.
  keys = jax.random.split(key, 4)
  np.testing.assert_allclose(blurred[2], A.gaussian_blur(keys[2], img, 0.1, 2.0, 5, p=1.0),
                             atol=1e-6)
  jit = jax.jit(lambda k, x: A.color_jitter_batch(k, x, 0.4, 0.4, 0.4, 0.1, p=1.0))
  jittered = jit(key, batch)
  assert len({float(jnp.sum(x)) for x in jittered}) == 4


@pytest.mark.parametrize('op', ['solarize', 'grayscale', 'flip'])
def test_apply_probability(op):
  n = 4000
  x = jnp.broadcast_to(jnp.asarray([0.9, 0.2, 0.6]), (n, 1, 2, 3))
  x = x.at[:, :, 1].set(jnp.asarray([0.1, 0.7, 0.3]))
  key = jax.random.key(11)
  if op == 'solarize':
    out = A.solarize_batch(key, x, 0.5, p=0.2)
  elif op == 'grayscale':
    out = A.random_grayscale_batch(key, x, p=0.2)
  else:
    out = A.random_flip_batch(key, x, p=0.2)
  frac = float(jnp.mean(jnp.any(out != x, axis=(1, 2, 3))))
  assert abs(frac - 0.2) < 0.03


# ---------------------------------------------------------------------------------------
# augment_batch and recipes.
# ---------------------------------------------------------------------------------------


def _batch(n=4, size=32, seed=12):
  return jnp.asarray(np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)),
                     jnp.uint8)


@functools.lru_cache(maxsize=None)
def _jitted(name):
  recipe = A.get_recipe(name)
  return jax.jit(lambda k, x: A.augment_batch(k, x, recipe))


def test_augment_batch_shape_dtype_jit_and_determinism():
  x = _batch()
  key = jax.random.key(0)
  fn = _jitted('simclr')
  out = fn(key, x)
  assert out.shape == x.shape and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, fn(key, x))
  eager = A.augment_batch(key, x, A.get_recipe('simclr'))
  np.testing.assert_allclose(out, eager, atol=1e-4)
  assert np.abs(np.asarray(out - fn(jax.random.key(1), x))).max() > 0.1
  # Same uint8 image or its float version: same result.
  np.testing.assert_allclose(
      A.augment_batch(key, x.astype(jnp.float32) / 255.0, A.RECIPES['none']),
      A.augment_batch(key, x, 'none'), atol=1e-6)


def test_augment_batch_examples_differ_within_batch():
  x = jnp.broadcast_to(_batch(1)[0], (4, 32, 32, 3))
  out = np.asarray(_jitted('simclr')(jax.random.key(5), x))
  for i, j in itertools.combinations(range(4), 2):
    assert np.abs(out[i] - out[j]).max() > 1e-3


def test_augment_batch_p0_is_identity_and_normalizes():
  x = _batch()
  recipe = dict(flip=0.0, color_jitter=dict(p=0.0, brightness=0.4, contrast=0.4,
                                            saturation=0.4, hue=0.1),
                grayscale=0.0, blur=dict(p=0.0), solarize=0.0,
                mean=(0.5, 0.25, 0.125), std=(0.5, 0.25, 2.0))
  out = np.asarray(A.augment_batch(jax.random.key(0), x, recipe))
  ref = (np.asarray(x, np.float32) / 255.0 - np.array([0.5, 0.25, 0.125])) / np.array(
      [0.5, 0.25, 2.0])
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
  # No mean/std: plain [0, 1] floats.
  np.testing.assert_allclose(A.augment_batch(jax.random.key(0), x, {}),
                             np.asarray(x, np.float32) / 255.0, atol=1e-7)
  # 'none' normalises with the ImageNet statistics.
  out = np.asarray(A.augment_batch(jax.random.key(0), x, A.get_recipe('none')))
  ref = (np.asarray(x, np.float32) / 255.0 - np.array(A.IMAGENET_MEAN)) / np.array(
      A.IMAGENET_STD)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_augment_batch_single_op_recipe_matches_op():
  x = _batch()
  key = jax.random.key(4)
  out = A.augment_batch(key, x, dict(solarize=1.0))
  np.testing.assert_allclose(out, A.apply_solarize(x / 255.0, 0.5), atol=1e-6)
  out = A.augment_batch(key, x, dict(blur=dict(p=1.0, sigma=(1.0, 1.0), kernel_size=5)))
  ref = jax.vmap(lambda im: A.apply_gaussian_blur(im, 1.0, 5))(x / 255.0)
  np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize('recipe,bad', [
    (dict(flip=0.5, colour_jitter=dict(p=0.8)), 'colour_jitter'),
    (dict(blur=dict(p=0.5, radius=3)), 'radius'),
    (dict(color_jitter=dict(p=0.8, sharpness=0.2)), 'sharpness'),
    (dict(solarize=dict(p=0.2, thresh=0.5)), 'thresh'),
])
def test_unknown_recipe_key_raises_naming_it(recipe, bad):
  with pytest.raises(ValueError, match=bad):
    A.augment_batch(jax.random.key(0), _batch(), recipe)
  with pytest.raises(ValueError, match=bad):
    A.get_recipe(recipe)


@pytest.mark.parametrize('recipe,field', [
    (dict(flip=1.5), 'flip'),
    (dict(color_jitter=dict(hue=0.7)), 'hue'),
    (dict(blur=dict(sigma=(2.0, 0.1))), 'blur.sigma'),
    (dict(mean=(0.5, 0.5, 0.5)), 'std'),
    (dict(grayscale='yes'), 'grayscale'),
])
def test_invalid_recipe_values_raise_naming_field(recipe, field):
  with pytest.raises(ValueError, match=field):
    A.validate_recipe(recipe)


def test_recipes_have_paper_values():
  simclr = A.get_recipe('simclr')
  assert simclr['color_jitter'] == dict(p=0.8, brightness=0.8, contrast=0.8,
                                        saturation=0.8, hue=0.2)
  assert simclr['grayscale'] == 0.2 and simclr['blur']['p'] == 0.5
  assert simclr['blur']['sigma'] == (0.1, 2.0) and simclr['blur']['kernel_frac'] == 0.1
  moco = A.get_recipe('mocov2')
  assert [moco['color_jitter'][k] for k in ('brightness', 'contrast', 'saturation', 'hue')
          ] == [0.4, 0.4, 0.4, 0.1]
  v1, v2 = A.get_recipe('byol_view1'), A.get_recipe('byol_view2')
  assert (v1['blur']['p'], v1['solarize']['p']) == (1.0, 0.0)
  assert (v2['blur']['p'], v2['solarize']['p']) == (0.1, 0.2)
  assert [v2['color_jitter'][k] for k in ('p', 'brightness', 'contrast', 'saturation', 'hue')
          ] == [0.8, 0.4, 0.4, 0.2, 0.1]
  assert A.get_recipe('dino_global1')['blur']['p'] == 1.0
  g2 = A.get_recipe('dino_global2')
  assert (g2['blur']['p'], g2['solarize']['p']) == (0.1, 0.2)
  assert A.get_recipe('dino_local')['blur']['p'] == 0.5
  assert set(A.get_recipe('none')) == {'mean', 'std'}
  # The host pipeline flips; a device flip would undo config.data.flip = 0.
  assert not any('flip' in r for r in A.RECIPES.values())
  for name in A.RECIPES:
    assert A.validate_recipe(A.get_recipe(name)) == A.get_recipe(name)  # idempotent


def test_get_recipe_overrides_and_config_dict():
  r = A.get_recipe('simclr', blur=dict(p=0.0), solarize=0.3, grayscale=None)
  assert r['blur'] == dict(p=0.0, sigma=(0.1, 2.0), kernel_frac=0.1, padding='reflect')
  assert r['solarize'] == dict(p=0.3, threshold=0.5)
  assert 'grayscale' not in r
  with pytest.raises(ValueError, match='bogus'):
    A.get_recipe('simclr', bogus=1)
  with pytest.raises(ValueError, match='simclrr'):
    A.get_recipe('simclrr')
  ml_collections = pytest.importorskip('ml_collections')
  cfg = ml_collections.ConfigDict(A.RECIPES['byol_view2'])
  assert A.get_recipe(cfg) == A.get_recipe('byol_view2')
