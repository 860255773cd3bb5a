"""SimSiam: negative-cosine loss, stop-gradient, fixed predictor lr, 1 vs 8 devices.
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_regression.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.methods.contrastive.siamese import param_labels
from ssl_jax.methods.contrastive.simsiam import SimSiam
from tests import helpers
from tests.methods import siamese_testlib as lib

STEPS = 3


def test_fixed_predictor_lr():
  """With a 5-step warmup the scheduled lr at step 0 is 0: only the predictor (constant lr) moves,
  by exactly -lr * (grad + wd * param)."""
  c = lib.load_config('simsiam', 'builtin', steps=20)
  c.optim.warmup_steps = 5
  method = SimSiam(c)
  params = method.init(jax.random.PRNGKey(0), {'view0': jnp.zeros((2, 16, 16, 3), jnp.uint8)})[0]
  labels = param_labels(params, method.param_label)
  assert set(jax.tree_util.tree_leaves(labels['predictor'])) == {'fixed_lr'}
  assert set(jax.tree_util.tree_leaves(labels['backbone'])) == {'train'}
  tx, lr = method.build_optimizer(20)
  assert float(lr(0)) == 0.0
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert all(np.abs(u).max() == 0 for u in jax.tree_util.tree_leaves(updates['backbone']))
  peak = c.optim.lr * c.data.batch_size / 256
  k = params['predictor']['fc0']['kernel']
  np.testing.assert_allclose(updates['predictor']['fc0']['kernel'],
                             -peak * (1 + c.optim.weight_decay * k), rtol=1e-5)
  np.testing.assert_allclose(updates['predictor']['bn0']['scale'], -peak, rtol=1e-6)  # no decay


@pytest.fixture(scope='module')
def runs():
  c = lib.load_config('simsiam', 'builtin')
  s8, h8 = helpers.run_steps(c, 8, STEPS)
  s1, h1 = helpers.run_steps(c, 1, STEPS)
  return dict(s8=s8, h8=h8, s1=s1, h1=h1)


def test_one_vs_eight_devices(runs):
  # The tolerances allow for a ReLU input that rounding puts on either side of zero. The 1- and
  # 8-device programs colour-augment the views to within 6e-7 of each other (the same ops
  # partitioned differently), and at this tiny scale (16 images, predictor width 128) one
  # predictor pre-activation sits within 2e-8 of zero: its ReLU gradient switches on in one run
  # and off in the other (measured at the ViT change of ba2a77b). That moves the 3-step loss by
  # 1.4e-6 (a mean of cosines near 1e-3 here, so an rtol alone would ask for 1e-7 absolute) and
  # the predictor/projector running statistics by up to 4e-4 of each statistic's largest entry
  # (9 % of a small entry). Sharding mistakes (statistics or gradients not reduced over all
  # devices, views paired wrongly) move them by percents of that scale.
  np.testing.assert_allclose([h['loss'] for h in runs['h8']], [h['loss'] for h in runs['h1']],
                             rtol=1e-4, atol=1e-5)
  helpers.assert_trees_close(runs['s8'].params, runs['s1'].params, rtol=2e-4, atol=1e-4)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(runs['s8'].buffers),
                          jax.tree_util.tree_leaves(runs['s1'].buffers)):
    err, scale = np.abs(np.asarray(x) - np.asarray(y)).max(), np.abs(np.asarray(y)).max()
    assert err <= 2e-3 * scale + 1e-4, (jax.tree_util.keystr(path), err, scale)
  assert set(runs['s8'].buffers) == {'batch_stats'}              # no EMA target
  assert all(-1 <= h['loss'] <= 1 and 0 < h['z_std'] for h in runs['h8'])
