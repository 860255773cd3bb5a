"""NNCLR: nearest-neighbour look-up and loss, support-set queue, 1 vs 8 devices, checkpoint.
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_contrastive.py."""
import tempfile

import numpy as np
import pytest

from tests import helpers
from tests.methods import siamese_testlib as lib

STEPS = 3


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
