"""MoCo v3: the symmetric 2-tau-scaled loss, ViT with a frozen random patch projection, EMA,
1 vs 8 devices, checkpoint round trip.
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_contrastive.py."""
import math
import tempfile

import jax
import numpy as np
import pytest

from ssl_jax.methods.contrastive.siamese import param_labels
from tests import helpers
from tests.methods import siamese_testlib as lib

STEPS = 3


@pytest.fixture(scope='module')
def runs():
  c = lib.load_config('mocov3', 'builtin_vit', steps=4)
  # LARS (the paper's ResNet optimizer) instead of AdamW: several ViT parameters have an exactly
  # zero true gradient (the key bias: softmax is shift invariant; the final-norm bias: the
  # projector's BN removes shifts), and Adam's first step turns their rounding noise into +-lr
  # with a sign that depends on the reduction order, i.e. on the device count. LARS still applies
  # weight decay, so the frozen patch projection test keeps its meaning.
  c.optim.name, c.optim.lr, c.optim.weight_decay = 'lars', 1.0, 1e-4
  workdir = tempfile.mkdtemp()
  exp, states, history = lib.run_and_save(c, 8, STEPS, workdir)
  state1, history1 = helpers.run_steps(c, 1, STEPS)
  return dict(config=c, exp=exp, states=states, history=history, state1=state1,
              history1=history1, workdir=workdir)


def test_one_vs_eight_devices(runs):
  # Losses agree to 1e-4; parameters to ~5e-5 absolute: the 8-device reductions sum in another
  # order (a semantic difference, e.g. per-device negatives, moves losses and params far more).
  np.testing.assert_allclose([h['loss'] for h in runs['history']],
                             [h['loss'] for h in runs['history1']], rtol=1e-4)
  helpers.assert_trees_close(runs['states'][-1].params,
                             runs['state1'].params, rtol=2e-4, atol=1e-4)
  helpers.assert_trees_close(runs['states'][-1].buffers,
                             runs['state1'].buffers, rtol=2e-4, atol=1e-4)


def test_frozen_random_patch_projection(runs):
  exp, states = runs['exp'], runs['states']
  assert exp.method.backbone.frozen_patch_embed and exp.method.backbone.pos_embed == 'sincos'
  labels = param_labels(states[0].params, exp.method.param_label)
  assert set(jax.tree_util.tree_leaves(labels['backbone']['patch_embed'])) == {'frozen'}
  assert set(jax.tree_util.tree_leaves(labels['backbone']['blocks_0'])) == {'train'}
  first, last = states[0], states[-1]
  # Weight decay would move them without the optimizer mask: they must be bit-identical.
  lib.assert_trees_equal(last.params['backbone']['patch_embed'],
                         first.params['backbone']['patch_embed'])
  lib.assert_trees_equal(last.buffers['teacher']['params']['backbone']['patch_embed'],
                         first.params['backbone']['patch_embed'])
  assert not np.allclose(last.params['backbone']['blocks_0']['attn']['qkv']['kernel'],
                         first.params['backbone']['blocks_0']['attn']['qkv']['kernel'])


def test_momentum_encoder_ema(runs):
  states = runs['states']
  for t in range(STEPS):
    # The reference updates the key encoder at the start of iteration t + 1 with m(t + 1).
    m = 1 - (1 - 0.99) * (math.cos(math.pi * (t + 1) / 4) + 1) / 2
    online = {k: states[t + 1].params[k] for k in ('backbone', 'projector')}
    expected = jax.tree_util.tree_map(lambda a, b: m * a + (1 - m) * b,
                                      states[t].buffers['teacher']['params'], online)
    helpers.assert_trees_close(states[t + 1].buffers['teacher']['params'], expected, rtol=1e-5,
                               atol=1e-7)


def test_target_survives_checkpoint(runs):
  restored = lib.restore(runs['config'], 8, runs['workdir'])
  lib.assert_trees_equal(restored.buffers, runs['states'][-1].buffers)


def test_old_method_backbone_keys_are_refused():
  """frozen_patch_embed / sincos_pos_embed moved to config.model; an old config names the move."""
  from ssl_jax.methods.contrastive.moco import MoCoV3  # pylint: disable=g-import-not-at-top
  c = lib.load_config('mocov3', 'builtin_vit', steps=1)
  c.method.frozen_patch_embed = True
  with pytest.raises(ValueError, match='config.model.frozen_patch_embed=True'):
    MoCoV3(c)
