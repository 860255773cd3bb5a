"""Fine-tuning pieces: layer-wise lr decay factors (exact), mixup, label smoothing."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_jax.eval import finetune
from ssl_jax.models import resnet, swin, vit
from ssl_jax import optim


def _scales(backbone, x, decay):
  model = finetune.Classifier(backbone, 10)
  params = model.init(jax.random.PRNGKey(0), x)['params']
  n = finetune._num_layers(backbone)  # pylint: disable=protected-access
  return params, finetune.layer_decay_scales(params, n, decay)


def test_vit_layer_decay_scales():
  net = vit.ViT(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
  _, s = _scales(net, jnp.zeros((1, 16, 16, 3)), 0.5)
  # L = 2 blocks: embeddings 0.5^3, block 0 0.5^2, block 1 0.5, final norm and head 1.
  assert s['backbone']['patch_embed']['proj']['kernel'] == 0.125
  assert s['backbone']['cls_token'] == 0.125 and s['backbone']['pos_embed'] == 0.125
  assert s['backbone']['blocks_0']['attn']['qkv']['kernel'] == 0.25
  assert s['backbone']['blocks_1']['mlp']['fc2']['bias'] == 0.5
  assert s['backbone']['norm']['scale'] == 1.0 and s['head']['kernel'] == 1.0


def test_resnet_layer_decay_scales_and_optimizer_applies_them():
  net = resnet.resnet18(width=4, cifar_stem=True)
  params, s = _scales(net, jnp.zeros((1, 16, 16, 3)), 0.5)
  assert s['backbone']['conv1']['kernel'] == 0.5 ** 5
  assert s['backbone']['layer1_0']['conv1']['kernel'] == 0.5 ** 4
  assert s['backbone']['layer4_1']['bn2']['scale'] == 0.5
  assert s['head']['bias'] == 1.0
  # One AdamW step from zero moments moves every weight by ~lr * scale (sign of the gradient).
  cfg = finetune.FinetuneConfig(steps=10, warmup_steps=0, lr=0.256, batch_size=256,
                                weight_decay=0.0, layer_decay=0.5)
  tx, _ = finetune.build_optimizer(params, cfg, 5)
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['backbone']['conv1']['kernel'], -0.256 * 0.5 ** 5, rtol=1e-4)
  np.testing.assert_allclose(updates['head']['kernel'], -0.256, rtol=1e-4)


def test_swin_layer_decay_scales_and_decay_mask():
  net = swin.Swin(patch_size=2, embed_dim=8, depths=(2, 1), num_heads=(2, 2), window_size=4)
  params, s = _scales(net, jnp.zeros((1, 16, 16, 3)), 0.5)
  b = s['backbone']
  # 3 blocks (num_layers 4): patch embedding 0.5^4, stage-0 blocks 0.5^3 / 0.5^2, its patch
  # merging with its last block (0.5^2), the stage-1 block 0.5, final norm and head 1.
  assert b['patch_embed']['proj']['kernel'] == 0.0625
  assert b['layers_0_blocks_0']['attn']['qkv']['kernel'] == 0.125
  assert b['layers_0_blocks_1']['mlp']['fc1']['kernel'] == 0.25
  assert b['layers_0_downsample']['reduction']['kernel'] == 0.25
  assert b['layers_1_blocks_0']['norm1']['scale'] == 0.5
  assert b['norm']['scale'] == 1.0 and s['head']['kernel'] == 1.0
  m = finetune._decay_mask(params)  # pylint: disable=protected-access
  assert m['backbone']['layers_0_blocks_0']['attn']['qkv']['kernel']
  assert not m['backbone']['layers_0_blocks_0']['attn']['relative_position_bias_table']
  assert not optim.decay_mask(params)['backbone']['layers_0_blocks_1']['attn'][
      'relative_position_bias_table']
  assert optim.decay_mask(params)['backbone']['layers_0_downsample']['reduction']['kernel']


def test_decay_mask_excludes_tokens_biases_norms():
  net = vit.ViT(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2)
  params, _ = _scales(net, jnp.zeros((1, 16, 16, 3)), 1.0)
  m = finetune._decay_mask(params)  # pylint: disable=protected-access
  assert m['backbone']['blocks_0']['attn']['qkv']['kernel']
  assert not m['backbone']['pos_embed'] and not m['backbone']['cls_token']
  assert not m['backbone']['norm']['scale'] and not m['head']['bias']


def test_mixup_mixes_images_and_targets_alike():
  x = jnp.arange(4.0)[:, None, None, None] * jnp.ones((4, 2, 2, 3))
  t = jax.nn.one_hot(jnp.arange(4), 4)
  xm, tm = finetune.mixup(jax.random.PRNGKey(3), x, t, alpha=0.4)
  np.testing.assert_allclose(tm.sum(-1), 1.0, rtol=1e-6)
  # The image value is sum_j target_j * j, since image i is the constant i.
  np.testing.assert_allclose(xm[:, 0, 0, 0], tm @ jnp.arange(4.0), rtol=1e-5)


def test_label_smoothing_loss_value():
  logits = jnp.zeros((1, 4))
  targets = optax.smooth_labels(jax.nn.one_hot(jnp.array([0]), 4), 0.1)
  assert float(finetune.soft_cross_entropy(logits, targets)) == pytest.approx(np.log(4))
  logits = jnp.array([[2.0, 0.0, 0.0, 0.0]])
  p = np.exp([2.0, 0, 0, 0]) / np.exp([2.0, 0, 0, 0]).sum()
  want = -(0.925 * np.log(p[0]) + 0.025 * np.log(p[1:]).sum())
  assert float(finetune.soft_cross_entropy(logits, targets)) == pytest.approx(want, rel=1e-5)
