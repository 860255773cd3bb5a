"""NNCLR: nearest-neighbour look-up and loss, support-set queue, 1 vs 8 devices, checkpoint."""
import math
import tempfile

import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import losses
from tests import helpers
from tests.methods import siamese_testlib as lib

STEPS = 3


def test_nearest_neighbour_hand_value():
  z = jnp.array([[1.0, 0.1], [0.0, -1.0]])
  support = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, -2.0]])
  nn, idx = losses.nearest_neighbour(z, support)
  np.testing.assert_array_equal(idx, [0, 2])
  np.testing.assert_allclose(nn, [[1.0, 0.0], [0.0, -1.0]])


def test_nnclr_contrastive_hand_value():
  nn = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  p = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  c = 1 / math.sqrt(2)
  l0 = -1.0 + math.log(math.exp(1.0) + math.exp(c))
  l1 = -c + math.log(1.0 + math.exp(c))
  loss, acc = losses.nnclr_contrastive(nn, p, temperature=1.0)
  np.testing.assert_allclose(loss, (l0 + l1) / 2, rtol=1e-6)
  np.testing.assert_allclose(acc, 1.0)


def _numpy_nnclr(z1, z2, p1, p2, support, tau):
  """Dwibedi et al. 2021 Eq. 2 (NN by Euclidean distance of unit vectors, Eq. 3), symmetrised."""
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  s = unit(support)

  def one(z, p):
    z, p = unit(z), unit(p)
    total = 0.0
    for i in range(len(z)):
      nn = s[np.argmin(np.linalg.norm(s - z[i], axis=-1))]
      total += -np.log(np.exp(nn @ p[i] / tau) / sum(np.exp(nn @ p[k] / tau)
                                                      for k in range(len(p))))
    return total / len(z)
  return (one(z1, p2) + one(z2, p1)) / 2


def test_nnclr_symmetric_matches_numpy():
  rng = np.random.default_rng(3)
  z1, z2, p1, p2 = (rng.normal(size=(6, 5)) for _ in range(4))
  support = rng.normal(size=(20, 5))
  loss, _ = losses.nnclr_symmetric(*(jnp.asarray(x) for x in (z1, z2, p1, p2, support)), 0.1)
  np.testing.assert_allclose(loss, _numpy_nnclr(z1, z2, p1, p2, support, 0.1), rtol=1e-5)


@pytest.fixture(scope='module')
def runs():
  c = lib.load_config('nnclr', 'builtin')
  c.method.support_size = 64
  workdir = tempfile.mkdtemp()
  exp, states, history = lib.run_and_save(c, 8, STEPS, workdir)
  state1, history1 = helpers.run_steps(c, 1, STEPS)
  return dict(config=c, states=states, history=history, state1=state1, history1=history1,
              workdir=workdir)


def test_one_vs_eight_devices(runs):
  np.testing.assert_allclose([h['loss'] for h in runs['history']],
                             [h['loss'] for h in runs['history1']], rtol=1e-4)
  helpers.assert_trees_close(runs['states'][-1].params, runs['state1'].params, rtol=2e-4,
                             atol=1e-4)
  helpers.assert_trees_close(runs['states'][-1].buffers, runs['state1'].buffers, rtol=2e-4,
                             atol=1e-4)


def test_support_set_is_a_fifo_of_unit_projections(runs):
  states, b = runs['states'], runs['config'].data.batch_size
  assert int(states[-1].buffers['support_ptr']) == STEPS * b
  support, initial = states[-1].buffers['support'], states[0].buffers['support']
  np.testing.assert_array_equal(support[STEPS * b:], initial[STEPS * b:])
  for t in range(STEPS):  # each step writes its own block and leaves the earlier ones alone
    block = slice(t * b, (t + 1) * b)
    assert not np.allclose(states[t + 1].buffers['support'][block], initial[block])
    np.testing.assert_array_equal(states[-1].buffers['support'][block],
                                  states[t + 1].buffers['support'][block])
  np.testing.assert_allclose(np.linalg.norm(support, axis=-1), 1.0, rtol=1e-5)


def test_support_set_survives_checkpoint(runs):
  restored = lib.restore(runs['config'], 8, runs['workdir'])
  lib.assert_trees_equal(restored.buffers, runs['states'][-1].buffers)
