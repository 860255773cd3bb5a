"""Weights in and out for the issue-32 ViTs, without downloads (float32, max abs diff < 1e-4).

In: timm's DINOv2 (with and without registers, SwiGLU ViT-g) and I-JEPA architectures, shrunk and
randomised, their state dicts rewritten into the official repositories' layouts (DINOv2's
``register_tokens`` / ``w12``/``w3`` / chunked blocks / training containers; I-JEPA's
``target_encoder`` with DDP prefixes), imported, features compared with timm's.
Out: ssl_jax ViTs with registers, LayerScale, SwiGLU and QK-norm exported to timm's layout give
timm's features, and the export reads back exactly.
"""
import jax
import numpy as np
import pytest

from ssl_jax.export import timm as timm_export
from ssl_jax.export import torch_import
from ssl_jax.models import vit

D, HEADS = 48, 3


def _nchw(torch, x):
  return torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy())


def _randomise(torch, model, seed=0):
  """Every tensor moved off timm's init (LayerScale gammas to O(1), so the blocks matter)."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('gamma'):
        p.copy_(0.5 + 0.2 * torch.randn_like(p))
      else:
        p.add_(0.05 * torch.randn_like(p))
  return model.eval()


def _timm_dinov2(torch, timm, arch, size):
  model = timm.create_model(arch, pretrained=False, img_size=size, embed_dim=D, depth=2,
                            num_heads=HEADS, num_classes=0, dynamic_img_size=True)
  return _randomise(torch, model)


def _to_dinov2_layout(torch, sd, chunks=0):
  """timm's DINOv2 state dict -> facebookresearch/dinov2's (the inverse of timm's
  checkpoint filter): registers back to ``register_tokens`` with the [CLS] position row split
  off again, SwiGLUPacked fc1/fc2 -> w12/w3, the unused ``mask_token``, and optionally FSDP
  block chunks ``blocks.<chunk>.<i>.``."""
  sd = {k: v.clone() for k, v in sd.items()}
  out = {'mask_token': torch.zeros(1, D)}
  if 'reg_token' in sd:   # timm folds cls's position row into cls_token (no_embed_class)
    row = 0.1 * torch.randn(1, 1, D)
    out['register_tokens'] = sd.pop('reg_token')
    out['cls_token'] = sd.pop('cls_token') - row
    out['pos_embed'] = torch.cat([row, sd.pop('pos_embed')], 1)
  swiglu = sd['blocks.0.mlp.fc1.weight'].shape[0] == 2 * sd['blocks.0.mlp.fc2.weight'].shape[1]
  for k, v in sd.items():
    if swiglu:
      k = k.replace('.mlp.fc1.', '.mlp.w12.').replace('.mlp.fc2.', '.mlp.w3.')
    if chunks and k.startswith('blocks.'):
      i = int(k.split('.')[1])
      k = f'blocks.{i // chunks}.{k[len("blocks."):]}'
    out[k] = v
  return out


def _container(torch, sd, kind):
  if kind == 'hub':           # dinov2_vits14[_reg4]_pretrain.pth: the bare backbone
    return sd
  if kind == 'train':         # fvcore checkpoint of a training run: student + teacher + heads
    model = {f'teacher.backbone.{k}': v for k, v in sd.items()}
    model.update({f'student.backbone.{k}': 0 * v for k, v in sd.items()})
    model['teacher.dino_head.mlp.0.weight'] = torch.randn(8, D)
    return {'model': model, 'iteration': 1249}
  if kind == 'teacher':       # eval/<iter>/teacher_checkpoint.pth
    return {'teacher': {**{f'backbone.{k}': v for k, v in sd.items()},
                        'ibot_head.mlp.0.weight': torch.randn(8, D)}}
  raise ValueError(kind)


@pytest.mark.parametrize('arch,kind,chunks', [
    ('vit_small_patch14_dinov2', 'hub', 0),
    ('vit_small_patch14_reg4_dinov2', 'hub', 0),
    ('vit_small_patch14_reg4_dinov2', 'teacher', 0),
    ('vit_giant_patch14_dinov2', 'train', 1)])
def test_dinov2_import_matches_timm(torch_timm, arch, kind, chunks):
  torch, timm = torch_timm
  model = _timm_dinov2(torch, timm, arch, 42)    # patch 14: a 3x3 grid
  x = np.random.default_rng(0).normal(size=(2, 42, 42, 3)).astype(np.float32)
  with torch.no_grad():
    pooled = model(_nchw(torch, x)).numpy()
    tokens = model.forward_features(_nchw(torch, x)).numpy()   # [cls, reg..., patches]
  official = _container(torch, _to_dinov2_layout(torch, model.state_dict(), chunks), kind)
  net, variables = torch_import.import_vit(official, layout='dinov2', num_heads=HEADS)
  regs = 4 if 'reg4' in arch else 0
  assert (net.patch_size, net.img_size, net.num_registers) == (14, 42, regs)
  assert net.layerscale_init > 0 and net.mlp == ('swiglu' if 'giant' in arch else 'gelu')
  out = net.apply(variables, x, method=vit.ViT.encode)
  assert np.abs(pooled).max() > 0.1
  diffs = [np.abs(np.asarray(net.apply(variables, x)) - pooled).max(),
           np.abs(np.asarray(out['prefix'][:, 0]) - tokens[:, 0]).max(),
           np.abs(np.asarray(out['patches']) - tokens[:, 1 + regs:]).max()]
  if regs:
    diffs.append(np.abs(np.asarray(out['registers']) - tokens[:, 1:1 + regs]).max())
  print(f'{arch} {kind}: max abs diff {max(diffs):.2e}')
  np.testing.assert_array_less(max(diffs), 1e-4)
  if kind == 'hub':   # another resolution: timm's resampled position embedding (3x3 -> 2x2, 5x5)
    for size in (28, 70):
      y = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype(np.float32)
      with torch.no_grad():
        theirs = model(_nchw(torch, y)).numpy()
      diff = np.abs(np.asarray(net.apply(variables, y)) - theirs).max()
      print(f'{arch} at {size} px: max abs diff {diff:.2e}')
      np.testing.assert_array_less(diff, 1e-4)


def test_ijepa_import_matches_timm(torch_timm):
  """I-JEPA's ViT: no [CLS], patch tokens average-pooled after the final norm."""
  torch, timm = torch_timm
  model = _randomise(torch, timm.models.vision_transformer.VisionTransformer(
      img_size=32, patch_size=8, embed_dim=D, depth=2, num_heads=HEADS, num_classes=0,
      class_token=False, global_pool='avg', fc_norm=False))
  x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    feats = model(_nchw(torch, x)).numpy()
  sd = model.state_dict()
  ckpt = {'target_encoder': {f'module.{k}': v for k, v in sd.items()},
          'encoder': {f'module.{k}': 0 * v for k, v in sd.items()},
          'predictor': {'module.predictor_embed.weight': torch.randn(16, D),
                        'module.mask_token': torch.zeros(1, 1, 16)},
          'epoch': 300, 'lr': 1e-3}
  for layout in ('ijepa', 'auto'):
    net, variables = torch_import.import_vit(ckpt, layout=layout, num_heads=HEADS)
    assert (net.num_prefix_tokens, net.num_registers, net.img_size) == (0, 0, 32)
    diff = np.abs(np.asarray(net.apply(variables, x)) - feats).max()
    print(f'ijepa {layout}: max abs diff {diff:.2e}')
    np.testing.assert_array_less(diff, 1e-4)


def _jax_randomise(variables, seed=0):
  """Every leaf moved off its init (LayerScale's 1e-5 gamma too, so the blocks matter)."""
  leaves, treedef = jax.tree_util.tree_flatten(variables)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree_util.tree_unflatten(
      treedef, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.mark.parametrize('parts', [
    dict(num_registers=4, layerscale_init=1e-5),
    dict(num_registers=2, num_prefix_tokens=2, mlp='swiglu', qk_norm=True),
    dict(layerscale_init=0.1, mlp='swiglu', pos_embed='sincos', pool='mean')])
def test_timm_export_of_new_parts(torch_timm, parts):
  torch, timm = torch_timm
  net = vit.ViT(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, **parts)
  x = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype(np.float32)
  variables = _jax_randomise(net.init(jax.random.PRNGKey(0), x))
  arch, kw = timm_export.timm_model_args(net)
  model = timm.create_model(arch, pretrained=False, **kw).eval()
  sd = timm_export.to_timm_state_dict(net, variables)
  assert set(sd) == set(model.state_dict())
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
  with torch.no_grad():
    theirs = model(_nchw(torch, x)).numpy()
  ours = np.asarray(net.apply(variables, x))
  diff = np.abs(ours - theirs).max()
  print(f'export {parts}: max abs diff {diff:.2e}')
  assert np.abs(ours).max() > 0.1
  np.testing.assert_array_less(diff, 1e-4)
  back = timm_export.from_timm_state_dict(net, sd)
  for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rope_export_is_refused():
  net = vit.ViT(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, rope=True)
  with pytest.raises(ValueError, match='RoPE'):
    timm_export.timm_model_args(net)
