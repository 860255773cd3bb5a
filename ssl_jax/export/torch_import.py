"""Official PyTorch ViT checkpoints of DINO, MAE and MoCo v3 into ssl_jax's ViT.

All three repositories build their ViT from timm's blocks, so after unwrapping the checkpoint the
backbone keys are timm's (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.i.*``,
``norm``); what differs is the container and the extra heads:

* DINO (facebookresearch/dino): ``dino_vits16_pretrain.pth`` etc. are the bare backbone state dict;
  the full training checkpoints hold ``{'teacher': {'backbone.*' | 'module.backbone.*', 'head.*'}}``
  (``layout='dino'`` takes the teacher, as DINO evaluates it).
* MAE (facebookresearch/mae): ``{'model': {...}}``; pretraining checkpoints add the decoder
  (``decoder_*``, ``mask_token``), dropped here; their fixed sin-cos ``pos_embed`` is stored in the
  state dict and is loaded as is. Fine-tuned checkpoints (global pool, ``fc_norm``) are not an
  encoder of this shape and are refused.
* MoCo v3 (facebookresearch/moco-v3): ``{'state_dict': {'module.base_encoder.*',
  'module.momentum_encoder.*', 'module.predictor.*'}}``; the base encoder is taken (as the
  authors' convert_to_deit.py does) without its projection ``head``; its fixed sin-cos
  ``pos_embed`` is loaded from the state dict.

The position embedding is always imported as a (learned-layout) parameter holding the checkpoint's
exact values, so the result does not depend on how each repository generated its sin-cos table::

    model, variables = load_vit_checkpoint('dino_deitsmall16_pretrain.pth')
    feats = model.apply(variables, x)   # x: (B, H, W, 3), ImageNet-normalised
"""
from __future__ import annotations

import numpy as np

from ssl_jax.export import timm as timm_export
from ssl_jax.models import vit as vit_lib

LAYOUTS = ('auto', 'timm', 'dino', 'mae', 'mocov3')
# Heads for the standard widths (DeiT / ViT presets); pass num_heads for others.
_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


def _to_numpy(v):
  if hasattr(v, 'detach'):
    v = v.detach().cpu()
    return v.float().numpy() if v.is_floating_point() else v.numpy()
  return np.asarray(v)


def _strip(sd: dict, prefix: str) -> dict:
  return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def backbone_state_dict(checkpoint: dict, layout: str = 'auto') -> dict:
  """The timm-named ViT backbone state dict inside an official checkpoint (numpy values)."""
  if layout not in LAYOUTS:
    raise ValueError(f'layout={layout!r} is not one of {LAYOUTS}')
  sd = checkpoint
  if layout in ('auto', 'mae') and 'model' in sd:
    sd = sd['model']
  elif layout in ('auto', 'mocov3') and 'state_dict' in sd:
    sd = sd['state_dict']
  elif layout in ('auto', 'dino') and 'teacher' in sd:
    sd = sd['teacher']
  for prefix in ('module.base_encoder.', 'base_encoder.', 'module.backbone.', 'backbone.',
                 'module.'):
    if any(k.startswith(prefix) for k in sd):
      sd = _strip(sd, prefix)
      break
  if 'fc_norm.weight' in sd:
    raise ValueError('checkpoint has fc_norm (a global-pool fine-tuned model); only the '
                     'pretrained [CLS] encoders are supported')
  drop = ('head.', 'decoder', 'mask_token', 'fc.', 'predictor.')
  return {k: _to_numpy(v) for k, v in sd.items() if not k.startswith(drop)}


def vit_from_state_dict(sd: dict, num_heads: int | None = None) -> vit_lib.ViT:
  """The ssl_jax ViT whose shapes match a timm-layout backbone state dict."""
  d, c, p, _ = sd['patch_embed.proj.weight'].shape
  depth = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks.'))
  prefix = int('cls_token' in sd) + (sd['reg_token'].shape[1] if 'reg_token' in sd else 0)
  n = sd['pos_embed'].shape[1] - prefix
  grid = int(round(n ** 0.5))
  if grid * grid != n:
    raise ValueError(f'pos_embed has {n} patch positions, not a square grid')
  heads = num_heads or _HEADS.get(d)
  if heads is None:
    raise ValueError(f'cannot infer num_heads for embed_dim={d}; pass num_heads=')
  mlp_ratio = sd['blocks.0.mlp.fc1.weight'].shape[0] / d
  return vit_lib.ViT(img_size=grid * p, patch_size=p, in_chans=c, embed_dim=d, depth=depth,
                     num_heads=heads, mlp_ratio=mlp_ratio,
                     qkv_bias='blocks.0.attn.qkv.bias' in sd, num_prefix_tokens=prefix,
                     pos_embed='learned')


def import_vit(checkpoint: dict, layout: str = 'auto', num_heads: int | None = None):
  """(ViT module, flax variables) from an official DINO / MAE / MoCo v3 (or timm) checkpoint
  dict (torch tensors or numpy arrays)."""
  sd = backbone_state_dict(checkpoint, layout)
  model = vit_from_state_dict(sd, num_heads)
  return model, timm_export.from_timm_state_dict(model, sd)


class UnsafeCheckpointError(ValueError):
  """A ``.pth`` file holds more than tensors and plain containers (a pickle that could run code)."""


def load_torch_file(path: str) -> dict:
  """The state dict in a ``.pth`` file, unpickled with ``torch.load(weights_only=True)``.

  A downloaded ``.pth`` is a pickle, and unpickling runs any callable it names (``__reduce__``);
  ``weights_only`` allows only tensors, numbers, strings and containers, so a file that holds
  anything else is refused before any of it runs.
  """
  import pickle  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  try:
    return torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    raise UnsafeCheckpointError(
        f'{path} holds more than tensors (torch.load(weights_only=True) refused it: '
        f'{str(e).splitlines()[0][:200]}); it was not loaded. Use a .safetensors file, or '
        'convert it yourself in a sandbox if you trust its source.') from e


def load_vit_checkpoint(path: str, layout: str = 'auto', num_heads: int | None = None):
  """:func:`import_vit` of a ``.safetensors`` (preferred: no code can hide in it) or ``.pth``
  file (needs torch; loaded with :func:`load_torch_file`, tensors only)."""
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    checkpoint = load_file(path)
  else:
    checkpoint = load_torch_file(path)
  return import_vit(checkpoint, layout, num_heads)
