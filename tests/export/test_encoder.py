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
