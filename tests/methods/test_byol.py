"""BYOL: normalised-MSE loss, the cosine EMA schedule, the EMA target update, 1 vs 8 devices,
checkpoint round trip of the target network.
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_regression.py."""
import math
import tempfile

import jax
import ml_collections
import numpy as np
import pytest

from ssl_jax.methods import common
from tests import helpers
from tests.methods import siamese_testlib as lib

STEPS = 3


def test_momentum_schedule_cosine():
  fn = common.momentum_schedule(ml_collections.ConfigDict(
      {'momentum': 0.996, 'momentum_final': 1.0}), 100)
  vals = np.array([fn(s) for s in (0, 25, 50, 100, 150)])
  ref = [1 - 0.004 * (math.cos(math.pi * k / 100) + 1) / 2 for k in (0, 25, 50, 100, 100)]
  np.testing.assert_allclose(vals, ref, rtol=1e-7)
  np.testing.assert_allclose(vals[[0, 2, 3]], [0.996, 0.998, 1.0], rtol=1e-7)
  constant = common.momentum_schedule(ml_collections.ConfigDict(
      {'momentum': 0.999, 'momentum_final': 0.999}), 100)
  np.testing.assert_allclose([constant(0), constant(70)], [0.999, 0.999], rtol=1e-7)


@pytest.fixture(scope='module')
def runs():
  c = lib.load_config('byol', 'builtin', steps=4)
  workdir = tempfile.mkdtemp()
  exp, states, history = lib.run_and_save(c, 8, STEPS, workdir)
  state1, history1 = helpers.run_steps(c, 1, STEPS)
  return dict(config=c, exp=exp, states=states, history=history, state1=state1,
              history1=history1, workdir=workdir)


def test_one_vs_eight_devices(runs):
  # Losses agree to 1e-4; parameters to ~5e-5 absolute: the 8-device reductions sum in another
  # order and LARS/Adam amplify float noise on near-zero bias gradients (a semantic difference,
  # e.g. per-device BatchNorm or negatives, moves the losses and params far more).
  np.testing.assert_allclose([h['loss'] for h in runs['history']],
                             [h['loss'] for h in runs['history1']], rtol=1e-4)
  helpers.assert_trees_close(runs['states'][-1].params, runs['state1'].params, rtol=2e-4,
                             atol=1e-4)
  helpers.assert_trees_close(runs['states'][-1].buffers, runs['state1'].buffers, rtol=2e-4,
                             atol=1e-4)


def test_target_is_ema_with_the_cosine_schedule(runs):
  states, exp = runs['states'], runs['exp']
  helpers.assert_trees_close(states[0].buffers['teacher']['params'],
                             {k: states[0].params[k] for k in ('backbone', 'projector')}, 0, 0)
  for t in range(STEPS):
    base = runs['config'].method.momentum
    tau = 1 - (1 - base) * (math.cos(math.pi * t / 4) + 1) / 2   # tau of the update at step t
    np.testing.assert_allclose(exp.method.momentum_at(t), tau, rtol=1e-7)
    online = {k: states[t + 1].params[k] for k in ('backbone', 'projector')}
    expected = jax.tree_util.tree_map(lambda a, b: tau * a + (1 - tau) * b,
                                      states[t].buffers['teacher']['params'], online)
    helpers.assert_trees_close(states[t + 1].buffers['teacher']['params'], expected, rtol=1e-5,
                               atol=1e-7)
  # Predictor is online only; the loss is in [0, 8] and the cosine metric in [-1, 1].
  assert 'predictor' not in states[-1].buffers['teacher']['params']
  assert all(0 <= h['loss'] <= 8 and abs(h['cosine']) <= 1 for h in runs['history'])


def test_target_survives_checkpoint(runs):
  restored = lib.restore(runs['config'], 8, runs['workdir'])
  lib.assert_trees_equal(restored.buffers, runs['states'][-1].buffers)
  lib.assert_trees_equal(restored.opt_state, runs['states'][-1].opt_state)
