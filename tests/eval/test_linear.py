"""Linear probe: chance on noise, near the top on an easy known-good feature (raw MNIST pixels),
in between for a random-init encoder; the augmented (MoCo/DINO) variant learns."""
import jax
import numpy as np
import pytest

from configs import simclr
from ssl_jax import methods
from ssl_jax.data import sources
from ssl_jax.eval import features as features_lib
from ssl_jax.eval import linear
from tests import helpers


@pytest.fixture(scope='module')
def mnist():
  tr = sources.builtin_source('mnist5k', 'train')
  te = sources.builtin_source('mnist5k', 'test')
  flat = lambda s: s.images[..., 0].reshape(len(s), -1).astype(np.float32) / 255.0
  return tr, te, flat(tr), flat(te)


@pytest.fixture(scope='module')
def random_encoder(mnist):
  """Features of a random-init tiny ResNet-18 (width 4) on 16 px centre crops."""
  tr, te, _, _ = mnist
  config = helpers.tiny(simclr.get_config('builtin'))
  mesh = helpers.mesh(8)
  method = methods.build_method(config)
  params, buffers = method.init(jax.random.PRNGKey(0), {'view0': np.zeros((2, 16, 16, 3),
                                                                           np.uint8)})
  fn = features_lib.make_feature_fn(method, mesh)
  kw = dict(mesh=mesh, image_size=16, batch_size=512)
  ftr, ytr = features_lib.extract_features(fn, params, buffers, tr, **kw)
  fte, yte = features_lib.extract_features(fn, params, buffers, te, **kw)
  return dict(fn=fn, params=params, buffers=buffers, mesh=mesh, ftr=ftr, ytr=ytr, fte=fte,
              yte=yte)


def test_raw_pixels_near_the_top(mnist):
  tr, te, xtr, xte = mnist
  for cfg in (linear.ProbeConfig(epochs=20), linear.ProbeConfig(epochs=20, optimizer='lars',
                                                                  lr=1.0)):
    r = linear.linear_probe(xtr, tr.labels, xte, te.labels, 10, cfg)
    # Multinomial logistic regression on MNIST-5k pixels: ~0.89 (sklearn LogisticRegression).
    assert 0.86 <= r['top1'] <= 0.95, (cfg.optimizer, r)
    assert r['top5'] >= 0.98 and r['train_top1'] >= r['top1']


def test_noise_features_at_chance(mnist):
  tr, te, _, _ = mnist
  rng = np.random.default_rng(0)
  r = linear.linear_probe(rng.normal(size=(len(tr), 64)), tr.labels,
                          rng.normal(size=(len(te), 64)), te.labels, 10,
                          linear.ProbeConfig(epochs=10))
  assert 0.05 <= r['top1'] <= 0.16 and 0.4 <= r['top5'] <= 0.6, r


def test_random_encoder_between_chance_and_pixels(mnist, random_encoder):
  e = random_encoder
  assert e['ftr'].shape == (4000, 32) and e['fte'].shape == (1000, 32)
  np.testing.assert_array_equal(e['yte'], mnist[1].labels)
  r = linear.linear_probe(e['ftr'], e['ytr'], e['fte'], e['yte'], 10,
                          linear.ProbeConfig(epochs=20))
  # 32 random conv features of digits: well above chance, below raw pixels' ~0.89.
  assert 0.3 <= r['top1'] <= 0.86, r


def test_augmented_probe_learns(mnist, random_encoder):
  e = random_encoder
  r = linear.augmented_linear_probe(
      e['fn'], e['params'], e['buffers'], mnist[0], e['fte'], e['yte'], mesh=e['mesh'],
      image_size=16, cfg=linear.ProbeConfig(batch_size=256, lr=0.5), clean_train_feats=e['ftr'],
      crop_scale=(0.5, 1.0), flip=0.0, steps=30)
  assert r['top1'] >= 0.3, r


def test_probe_config_from_eval_config():
  c = simclr.get_config('builtin').eval
  cfg = linear.ProbeConfig.from_config(c)
  assert isinstance(cfg, linear.ProbeConfig) and cfg.epochs > 0
  with pytest.raises(ValueError, match='normalize'):
    linear.FeatureNorm.fit('bn', np.zeros((2, 2)))
