"""Encoder-only Orbax export: one call gives back a plain flax module with the same features."""
import jax
import numpy as np
import pytest

from ssl_jax.export import encoder as encoder_lib
from ssl_jax.export import load_encoder
from ssl_jax.models import resnet, swin, vit


@pytest.mark.parametrize('kind', ['resnet', 'vit', 'swin'])
def test_save_load_round_trip(tmp_path, kind):
  if kind == 'resnet':
    net = resnet.resnet18(width=4, cifar_stem=True)
  elif kind == 'swin':
    net = swin.Swin(patch_size=2, embed_dim=8, depths=(2, 1), num_heads=(2, 2), window_size=4,
                    mlp_ratio=2.0)
  else:
    net = vit.ViT(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                  pos_embed='sincos', drop_path_rate=0.1)
  x = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype(np.float32)
  variables = net.init(jax.random.PRNGKey(1), x, train=False)
  if kind == 'resnet':   # non-trivial running statistics must survive too
    variables = {'params': variables['params'], 'batch_stats': jax.tree_util.tree_map(
        lambda s: s + 0.5, variables['batch_stats'])}
  want = np.asarray(net.apply(variables, x, train=False))
  d = encoder_lib.save_encoder(str(tmp_path / 'enc'), net, variables,
                               mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
  model, loaded = load_encoder(d)
  assert type(model) is type(net)
  got = np.asarray(model.apply(loaded, x, train=False))
  np.testing.assert_array_equal(got, want)
  for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  img = np.full((1, 2, 2, 3), 255, np.uint8)
  np.testing.assert_allclose(encoder_lib.preprocess(d, img), 2.0)   # (1 - 0.5) / 0.25


def test_preprocess_applies_the_encoder_colour(tmp_path):
  """encoder.json's color: grey = luma replicated, cie_l = CIE L / 100 replicated, each before
  (x - mean) / std; an export without "color" (older ones) is RGB."""
  net = vit.ViT(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2)
  variables = net.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32), train=False)
  img = np.zeros((1, 1, 2, 3), np.uint8)
  img[0, 0, 0] = (255, 0, 0)        # pure red: luma 0.299, CIE L 53.24
  img[0, 0, 1] = (255, 255, 255)    # white: luma 1, L 100
  half = dict(mean=(0.5,) * 3, std=(0.5,) * 3)
  for color, want in (('rgb', [[1, -1, -1], [1, 1, 1]]),
                      ('gray', [[2 * 0.299 - 1] * 3, [1] * 3]),
                      ('cie_l', [[2 * 0.5324 - 1] * 3, [1] * 3])):
    d = encoder_lib.save_encoder(str(tmp_path / color), net, variables, color=color, **half)
    np.testing.assert_allclose(encoder_lib.preprocess(d, img)[0, 0], want, atol=2e-4,
                               err_msg=color)
  with pytest.raises(ValueError, match="color='lab'"):
    encoder_lib.save_encoder(str(tmp_path / 'bad'), net, variables, color='lab')


def _method(name, **method):
  from ssl_jax import methods  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  c = helpers.tiny(importlib.import_module(f'configs.{name}').get_config('builtin'))
  c.method.update(method)
  return methods.build_method(c), c


@pytest.mark.parametrize('name,method,color', [
    ('simclr', {}, 'rgb'), ('colorization', {}, 'gray'), ('cmc', {'views': ('L', 'ab')}, 'cie_l'),
    ('cmc', {'views': ('rgb', 'edges'), 'feature_views': ()}, 'rgb'), ('sit', {}, 'rgb')])
def test_method_eval_input_is_what_export_writes(tmp_path, name, method, color):
  """``Method.normalize`` (eval, fine-tuning) and the exported encoder's ``preprocess`` give the
  same input: grey for colorization, CIE L for CMC's L encoder (both were exported as ImageNet RGB
  before)."""
  m, _ = _method(name, **method)
  spec = m.encoder_input()
  assert spec['color'] == color
  net = vit.ViT(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2)
  d = encoder_lib.save_encoder(str(tmp_path / 'enc'), net, {'params': {}}, **spec)
  img = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3)).astype(np.uint8)
  np.testing.assert_allclose(encoder_lib.preprocess(d, img), np.asarray(m.normalize(img)),
                             atol=1e-5)


def test_configured_mean_std_reach_eval_and_export():
  """``aug.overrides`` mean / std normalise the training views, and so eval and the export."""
  from ssl_jax import methods  # pylint: disable=g-import-not-at-top
  m, c = _method('simclr')
  c.aug.overrides = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
  m = methods.build_method(c)
  assert m.encoder_input() == {'color': 'rgb', 'mean': (0.5,) * 3, 'std': (0.25,) * 3}
  np.testing.assert_allclose(m.normalize(np.full((1, 2, 2, 3), 255, np.uint8)), 2.0)
