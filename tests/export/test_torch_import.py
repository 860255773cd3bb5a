"""Import of official DINO / MAE / MoCo v3 checkpoint layouts (built here from a timm ViT with
random weights: no downloads) into ssl_jax's ViT: same features as the PyTorch model."""
import numpy as np
import pytest

from ssl_jax.export import torch_import


@pytest.fixture(scope='module')
def timm_vit(torch_timm):
  torch, timm = torch_timm
  torch.manual_seed(0)
  model = timm.models.vision_transformer.VisionTransformer(
      img_size=16, patch_size=4, embed_dim=48, depth=2, num_heads=3, num_classes=0)
  with torch.no_grad():  # timm zero-inits some tensors; make every one of them matter
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.eval()
  x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  with torch.no_grad():
    feats = model(torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy())).numpy()
  return torch, model.state_dict(), x, feats


def _official(torch, sd, layout):
  """The container each repository publishes, around the timm-named backbone."""
  if layout == 'dino_backbone':      # dino_deitsmall16_pretrain.pth
    return dict(sd)
  if layout == 'dino':               # full training checkpoint: teacher + student, DDP prefixes
    head = {'head.mlp.0.weight': torch.randn(8, 48), 'head.last_layer.weight_g': torch.ones(1, 8)}
    return {'teacher': {**{f'backbone.{k}': v for k, v in sd.items()}, **head},
            'student': {f'module.backbone.{k}': v * 0 for k, v in sd.items()}, 'epoch': 100}
  if layout == 'mae':                # mae_pretrain_vit_base.pth (+ decoder when full)
    dec = {'mask_token': torch.zeros(1, 1, 16), 'decoder_embed.weight': torch.randn(16, 48),
           'decoder_pos_embed': torch.randn(1, 17, 16), 'decoder_pred.weight': torch.randn(48, 16)}
    return {'model': {**sd, **dec}}
  if layout == 'mocov3':             # vit-s-300ep.pth.tar
    st = {f'module.base_encoder.{k}': v for k, v in sd.items()}
    st.update({f'module.momentum_encoder.{k}': v * 0 for k, v in sd.items()})
    st.update({'module.base_encoder.head.0.weight': torch.randn(64, 48),
               'module.predictor.0.weight': torch.randn(64, 64)})
    return {'state_dict': st, 'epoch': 300, 'arch': 'vit_small'}
  raise ValueError(layout)


@pytest.mark.parametrize('layout', ['dino_backbone', 'dino', 'mae', 'mocov3'])
def test_import_matches_pytorch_features(timm_vit, layout):
  torch, sd, x, feats = timm_vit
  model, variables = torch_import.import_vit(_official(torch, sd, layout), num_heads=3)
  assert (model.embed_dim, model.depth, model.patch_size, model.img_size) == (48, 2, 4, 16)
  ours = np.asarray(model.apply(variables, x))
  assert np.abs(feats).max() > 0.1
  np.testing.assert_array_less(np.abs(ours - feats).max(), 1e-4)


def test_load_file_and_errors(timm_vit, tmp_path):
  torch, sd, x, feats = timm_vit
  path = str(tmp_path / 'ckpt.pth')
  torch.save(_official(torch, sd, 'mocov3'), path)
  model, variables = torch_import.load_vit_checkpoint(path, layout='mocov3', num_heads=3)
  np.testing.assert_array_less(np.abs(np.asarray(model.apply(variables, x)) - feats).max(), 1e-4)
  with pytest.raises(ValueError, match='num_heads'):
    torch_import.import_vit(dict(sd))          # 48 is not a standard width
  with pytest.raises(ValueError, match='layout'):
    torch_import.import_vit(dict(sd), layout='simclr')
  broken = {k: v for k, v in sd.items() if k != 'blocks.1.mlp.fc2.bias'}
  with pytest.raises(KeyError, match='blocks.1.mlp.fc2.bias'):
    torch_import.import_vit(broken, num_heads=3)


class _Payload:
  """Unpickling this calls os.mkdir(marker): what a malicious .pth could do instead."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    import os  # pylint: disable=g-import-not-at-top
    return os.mkdir, (self.marker,)


@pytest.mark.parametrize('container', ['torch_save', 'raw_pickle'])
def test_pickle_with_code_is_refused_and_nothing_runs(timm_vit, tmp_path, container):
  import pickle  # pylint: disable=g-import-not-at-top
  torch, sd, _, _ = timm_vit
  marker = tmp_path / 'pwned'
  path = str(tmp_path / 'evil.pth')
  checkpoint = {'model': dict(sd), 'extra': _Payload(str(marker))}
  if container == 'torch_save':   # the zip container torch.save writes
    torch.save(checkpoint, path)
  else:                           # a bare pickle (torch's legacy format path)
    with open(path, 'wb') as f:
      pickle.dump(checkpoint, f)
  with pytest.raises(torch_import.UnsafeCheckpointError, match='weights_only=True'):
    torch_import.load_vit_checkpoint(path, layout='mae', num_heads=3)
  assert not marker.exists(), 'the payload ran'
  torch.save({'model': dict(sd)}, path)   # the same tensors without the payload load fine
  model, _ = torch_import.load_vit_checkpoint(path, layout='mae', num_heads=3)
  assert model.embed_dim == 48
