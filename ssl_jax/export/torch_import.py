"""Official PyTorch ViT checkpoints of DINO, MAE, MoCo v3, DINOv2 and I-JEPA into ssl_jax's ViT.

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

* DINOv2 (facebookresearch/dinov2): ``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth`` are the bare
  backbone with DINOv2's own names: ``register_tokens`` (reg4 models; no position embedding, placed
  after [CLS] as ssl_jax's ``num_registers``), ``blocks.i.ls1/ls2.gamma`` (LayerScale),
  ``mlp.w12``/``mlp.w3`` (ViT-g's fused SwiGLU, = ssl_jax's packed ``mlp/fc1``/``fc2``) and an
  unused ``mask_token`` (dropped). Training checkpoints (``{'model': {'teacher.backbone.*', ...}}``
  or ``teacher_checkpoint.pth``'s ``{'teacher': {'backbone.*', ...}}``) give the teacher; their
  chunked blocks ``blocks.<chunk>.<i>.*`` (FSDP ``block_chunks``) are unchunked.
* I-JEPA (facebookresearch/ijepa): ``{'encoder', 'predictor', 'target_encoder', ...}`` each with
  DDP ``module.`` prefixes; the ``target_encoder`` is taken (``layout='ijepa'``; the one the
  paper evaluates). Its ViT has no [CLS] token: the import has ``num_prefix_tokens=0`` and pools
  the mean of the final-normed patch tokens, as the paper's linear probe does.

The position embedding is always imported as a (learned-layout) parameter holding the checkpoint's
exact values, so the result does not depend on how each repository generated its sin-cos table::

    model, variables = load_vit_checkpoint('dino_deitsmall16_pretrain.pth')
    feats = model.apply(variables, x)   # x: (B, H, W, 3), ImageNet-normalised
"""
from __future__ import annotations

import re

import numpy as np

from ssl_jax.export import timm as timm_export
from ssl_jax.models import vit as vit_lib

LAYOUTS = ('auto', 'timm', 'dino', 'mae', 'mocov3', 'dinov2', 'ijepa')
# Heads for the standard widths (DeiT / ViT presets, ViT-H, I-JEPA's ViT-g 1408 and DINOv2's
# ViT-g 1536); pass num_heads for others.
_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1536: 24}
_CHUNKED_BLOCK = re.compile(r'^blocks\.\d+\.(\d+)\.')


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
  if layout in ('auto', 'ijepa') and 'target_encoder' in sd:
    sd = sd['target_encoder']
  elif layout in ('auto', 'mae', 'dinov2') and 'model' in sd:
    sd = sd['model']
  elif layout in ('auto', 'mocov3') and 'state_dict' in sd:
    sd = sd['state_dict']
  elif layout in ('auto', 'dino', 'dinov2') and 'teacher' in sd:
    sd = sd['teacher']
  for prefix in ('teacher.backbone.', 'module.base_encoder.', 'base_encoder.',
                 'module.backbone.', 'backbone.', 'module.'):
    if any(k.startswith(prefix) for k in sd):
      sd = _strip(sd, prefix)
      break
  if 'fc_norm.weight' in sd:
    raise ValueError('checkpoint has fc_norm (a global-pool fine-tuned model); only the '
                     'pretrained [CLS] encoders are supported')
  drop = ('head.', 'decoder', 'mask_token', 'fc.', 'predictor.')
  return _dinov2_names({k: _to_numpy(v) for k, v in sd.items() if not k.startswith(drop)})


def _dinov2_names(sd: dict) -> dict:
  """DINOv2's names -> ssl_jax's timm-like ones: unchunk ``blocks.<chunk>.<i>.`` and rename the
  fused SwiGLU ``mlp.w12``/``mlp.w3`` to ``mlp.fc1``/``mlp.fc2`` (same layout: w12 is
  [gate | value], as ssl_jax's packed fc1). Other layouts pass through unchanged."""
  out = {}
  for k, v in sd.items():
    k = _CHUNKED_BLOCK.sub(r'blocks.\1.', k)
    out[k.replace('.mlp.w12.', '.mlp.fc1.').replace('.mlp.w3.', '.mlp.fc2.')] = v
  return out


def _mlp_config(sd: dict, dim: int) -> dict:
  """``mlp`` and ``mlp_ratio`` from block 0's MLP shapes: GELU has fc1 out == fc2 in (ratio =
  H / D); SwiGLU's packed fc1 is twice fc2's input H, and the ratio is one whose DINOv2 rule
  (vit.swiglu_hidden_dim) gives back H (4.0 for DINOv2's ViT-g)."""
  fc1, fc2 = sd['blocks.0.mlp.fc1.weight'].shape[0], sd['blocks.0.mlp.fc2.weight'].shape[1]
  if fc1 == fc2:
    return dict(mlp='gelu', mlp_ratio=fc1 / dim)
  if fc1 != 2 * fc2:
    raise ValueError(f'blocks.0.mlp: fc1 gives {fc1} features, fc2 takes {fc2}; neither a GELU '
                     'MLP nor a packed SwiGLU')
  for ratio in (4.0, (1.5 * fc2 + 0.25) / dim):
    if vit_lib.swiglu_hidden_dim(dim, ratio) == fc2:
      return dict(mlp='swiglu', mlp_ratio=ratio)
  raise ValueError(f'SwiGLU hidden width {fc2} is not a multiple of 8 (DINOv2 sizing rule)')


def vit_from_state_dict(sd: dict, num_heads: int | None = None) -> vit_lib.ViT:
  """The ssl_jax ViT whose shapes match a timm-layout backbone state dict."""
  d, c, p, _ = sd['patch_embed.proj.weight'].shape
  depth = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks.'))
  prefix = int('cls_token' in sd) + (sd['reg_token'].shape[1] if 'reg_token' in sd else 0)
  registers = sd['register_tokens'].shape[1] if 'register_tokens' in sd else 0
  n = sd['pos_embed'].shape[1] - prefix
  grid = int(round(n ** 0.5))
  if grid * grid != n:
    raise ValueError(f'pos_embed has {n} patch positions, not a square grid')
  heads = num_heads or _HEADS.get(d)
  if heads is None:
    raise ValueError(f'cannot infer num_heads for embed_dim={d}; pass num_heads=')
  return vit_lib.ViT(img_size=grid * p, patch_size=p, in_chans=c, embed_dim=d, depth=depth,
                     num_heads=heads, qkv_bias='blocks.0.attn.qkv.bias' in sd,
                     num_prefix_tokens=prefix, pos_embed='learned', num_registers=registers,
                     # LayerScale's init value only matters for training from scratch.
                     layerscale_init=1e-5 if 'blocks.0.ls1.gamma' in sd else 0.0,
                     qk_norm='blocks.0.attn.q_norm.weight' in sd,
                     # timm's resampling at other resolutions (DINOv2 at 224 px etc.)
                     pos_embed_antialias=True,
                     **_mlp_config(sd, d))


def import_vit(checkpoint: dict, layout: str = 'auto', num_heads: int | None = None):
  """(ViT module, flax variables) from an official DINO / MAE / MoCo v3 / DINOv2 / I-JEPA (or
  timm) checkpoint dict (torch tensors or numpy arrays)."""
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
