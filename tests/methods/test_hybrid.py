"""Tests for the hybrid methods (SiT, CMAE): the uncertainty weighting against a hand computation
and a numpy implementation, the weights' direction when one task's loss is scaled, SiT's
corruption, and real train steps on 1 vs 8 simulated devices.
The loss functions' own tests (hand values, numpy references) are in
tests/losses/test_pretext.py."""
import jax
import numpy as np
import pytest

from ssl_jax.methods.hybrid import sit
from tests import helpers
from tests.methods.test_pretext import load_config, parity


def test_corruption_touches_only_the_mask():
  img = jax.random.uniform(jax.random.PRNGKey(0), (16, 16, 3))
  other = jax.random.uniform(jax.random.PRNGKey(1), (16, 16, 3))
  out, mask = sit.corrupt_image(jax.random.PRNGKey(2), img, other, num_blocks=3, max_frac=0.5)
  mask = np.asarray(mask)
  assert 0 < mask.sum() < 16 * 16
  np.testing.assert_array_equal(np.asarray(out)[~mask], np.asarray(img)[~mask])
  assert np.abs(np.asarray(out)[mask] - np.asarray(img)[mask]).max() > 0.01
  m = np.asarray(sit.block_mask(jax.random.PRNGKey(3), 16, 16, 0.25))
  ys, xs = np.nonzero(m)
  assert m.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1) and np.ptp(ys) < 4 and np.ptp(xs) < 4


def sit_config(task_scale=(1.0, 1.0, 1.0)):
  c = helpers.tiny(load_config('sit'))
  c.model.backbone = 'vit_tiny'
  c.method.proj_hidden_dim = 16
  c.method.proj_dim = 8
  c.method.task_scale = task_scale
  # SGD (not the config's AdamW, whose first steps move every parameter by ~lr whatever the
  # gradient's size), so the log-variance step is proportional to 1/2 - c exp(-s) L.
  c.optim.name = 'sgd'
  c.optim.lr = 0.05
  c.optim.lr_scaling = 'none'
  c.optim.clip_grad_norm = 0.0
  c.optim.warmup_steps = 0
  return c


@pytest.fixture(scope='module')
def sit_run():
  return parity(sit_config(), steps=2)


def test_sit_one_vs_eight_devices(sit_run):
  state, history = sit_run
  assert state.params['backbone']['reg_token'].shape == (1, 1, 32)   # the contrastive token
  assert state.params['backbone']['pos_embed'].shape == (1, 2 + 16, 32)
  h = history[0]
  # logged weights start at exp(0) = 1 for the cross-entropies, 0.5 for the L1 reconstruction
  np.testing.assert_allclose([h[f'weight_{name}'] for name in sit.TASKS], [0.5, 1.0, 1.0],
                             rtol=1e-6)
  np.testing.assert_allclose(h['loss'], 0.5 * h['loss_recon'] + h['loss_rotation']
                             + h['loss_contrastive'], rtol=1e-5)
  assert abs(h['loss_rotation'] - np.log(4)) < 0.7


def test_sit_weights_follow_scaled_task(sit_run):
  """Multiplying the reconstruction loss by 20 must lower its learned weight (raise its log
  variance) relative to the unscaled run, and leave the other tasks' weights nearly alone."""
  base_state, base_hist = sit_run
  scaled_state, scaled_hist = helpers.run_steps(sit_config((20.0, 1.0, 1.0)), 1, 2)
  s0 = np.asarray(base_state.params['log_vars'])
  s1 = np.asarray(scaled_state.params['log_vars'])
  assert s1[0] > s0[0] + 0.02
  assert scaled_hist[-1]['weight_recon'] < base_hist[-1]['weight_recon']
  # the scaled loss is above 1, so its log-variance went up from 0
  assert scaled_hist[0]['loss_recon'] > 1.0 and s1[0] > 0


def test_sit_backbone_comes_from_the_config():
  """SiT's two prefix tokens are config.model fields (one backbone definition, issue 29): a config
  without them is refused by name instead of being rebuilt differently by fine-tuning/export."""
  c = sit_config()
  method = sit.SiT(c)
  assert method.backbone.num_prefix_tokens == 2 and method.backbone.pool_token == 1
  c.model.num_prefix_tokens = 1
  with pytest.raises(ValueError, match='config.model.num_prefix_tokens=2'):
    sit.SiT(c)
