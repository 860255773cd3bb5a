"""CMC: the cross-view loss against numpy (both directions, full and core graphs), the Lab views,
the config checks, and two train steps of the L / ab method (banks scattered at the batch's
indices, features = the first view's encoder, 1 vs 8 devices, exact checkpoint restore).
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_contrastive.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.methods import build_method
from ssl_jax.methods.base import apply_module
from ssl_jax.methods.contrastive import cmc
from tests import helpers
from tests.methods import _contrastive_utils as utils


def test_lab_views():
  rgb = jnp.array([[[[0., 0., 0.], [1., 1., 1.]], [[0.5, 0.5, 0.5], [1., 0., 0.]]]])  # (1,2,2,3)
  l = np.asarray(cmc.l_view(rgb))
  assert l.shape == (1, 2, 2, 3)
  np.testing.assert_allclose(l[0, 0, :, 0], [-1.0, 1.0], atol=1e-4)   # L = 0 and 100
  np.testing.assert_array_equal(l[..., 0], l[..., 2])
  ab = np.asarray(cmc.ab_view(rgb))
  assert ab.shape == (1, 2, 2, 2)
  # Greys share one (a, b) = (0, 0); pure red (a = 80.1, b = 67.2) lies far from it.
  np.testing.assert_allclose(ab[0, 0, 0], ab[0, 1, 0], atol=1e-3)
  np.testing.assert_allclose(ab[0, 0, 0], [-6.025 / 92.208, 6.6895 / 101.1675], atol=1e-3)
  assert ab[0, 1, 1, 0] > 0.7 and ab[0, 1, 1, 1] > 0.5


def _config(**method):
  c = helpers.tiny(utils.load_config('cmc'))
  c.data.name = 'mnist5k_color'
  c.method.feature_dim = 16
  c.method.feature_views = ()
  for k, v in method.items():
    c.method[k] = v
  return c


@pytest.mark.parametrize('field,value,match', [
    ('views', ('L', 'depth'), "unknown: \\['depth'\\]"),
    ('views', ('L',), 'two or more distinct'),
    ('views', ('ab', 'L'), "views\\[0\\]='ab'.*3-channel"),
    ('graph', 'star', "graph 'star'"),
    ('feature_views', ('edges',), "feature_views=.*'edges'"),
])
def test_config_errors(field, value, match):
  with pytest.raises(ValueError, match=match):
    build_method(_config(**{field: value}))


@pytest.fixture(scope='module')
def runs():
  banks = lambda s: s.buffers['banks']
  return utils.run(_config(), 1, 2, banks), utils.run(_config(), 8, 2, banks)


def test_both_banks_scattered_at_batch_indices(runs):
  one, _ = runs
  idx = np.asarray(one['exp'].train_ds[0]['index'])
  untouched = np.setdiff1d(np.arange(4000), idx)
  for name in ('L', 'ab'):
    init, after = one['init'].buffers['banks'][name], one['snaps'][0][name]
    assert after.shape == (4000, 16)
    np.testing.assert_array_equal(after[untouched], init[untouched])
    assert (np.abs(after[idx] - init[idx]).max(axis=1) > 1e-3).all()
    np.testing.assert_allclose(np.linalg.norm(after[idx], axis=1), 1.0, rtol=1e-5)
  # The two views' encoders have their own parameters and input widths (3 vs 2 channels).
  params = one['state'].params
  assert set(params['view_encoders']) == {'ab'}
  k_l = jax.tree_util.tree_leaves(params['backbone'])
  k_ab = jax.tree_util.tree_leaves(params['view_encoders']['ab'])
  assert {x.shape for x in k_l} != {x.shape for x in k_ab}


def test_features_concatenate_views_first_is_exported_encoder(runs):
  one, _ = runs
  exp, state = one['exp'], one['state']
  method = exp.method
  images = jnp.asarray(np.stack([exp.train_ds[0]['view0'][i] for i in range(4)]))
  f = method.features(state.params, state.buffers, images)
  assert f.shape == (4, 2 * method.encoder_dim) and method.feature_dim == 2 * method.encoder_dim
  enc = method.encoder_variables(state.params, state.buffers)
  h, _ = apply_module(method.backbone, enc['params'], enc.get('batch_stats', {}),
                      method.normalize(images), train=False)
  np.testing.assert_allclose(np.asarray(f[:, :method.encoder_dim]), np.asarray(h), rtol=1e-5,
                             atol=1e-6)


def test_one_vs_eight_devices(runs):
  one, eight = runs
  for h1, h8 in zip(one['history'], eight['history']):
    assert np.isfinite(h1['loss']) and h1['loss'] > 0
    np.testing.assert_allclose(h1['loss'], h8['loss'], rtol=1e-4)
  helpers.assert_trees_close(one['state'].params, eight['state'].params)
  helpers.assert_trees_close(one['state'].buffers, eight['state'].buffers)


def test_checkpoint_restores_banks_exactly(runs):
  _, eight = runs
  utils.assert_restores_exactly(eight['exp'], eight['state'])
