"""Encoder weights in timm's PyTorch layout (safetensors), for ViT, Swin and ResNet backbones.

The flax modules already use timm's names (see models/vit.py and models/resnet.py), so the
conversion is a rename plus a layout change per tensor:

* ``Dense`` kernel (in, out)            -> ``Linear.weight`` (out, in)
* ``Conv`` kernel (kh, kw, in, out)     -> ``Conv2d.weight`` (out, in, kh, kw)
* ``LayerNorm``/``BatchNorm`` scale     -> ``.weight``; BatchNorm ``mean``/``var`` ->
  ``running_mean``/``running_var`` (+ ``num_batches_tracked``, which timm's state dict carries)
* ViT with fixed sin-cos position embedding: timm's ``pos_embed`` is regenerated as a tensor.
* ViT register tokens (``register_tokens``, Darcet et al. 2024) are appended to timm's
  ``reg_token`` and get zero ``pos_embed`` rows (timm adds a position embedding to every prefix
  token unless ``no_embed_class``; a zero row leaves them as ssl_jax runs them).
* LayerScale (``ls1``/``ls2.gamma``) and QK-norm (``attn.q_norm``/``k_norm``) keep their names;
  timm builds them from ``init_values`` and ``qk_norm``. SwiGLU's packed ``mlp.fc1`` (D, 2H) is
  timm's ``SwiGLUPacked``, built by the ``vit_giant_patch14_dinov2`` architecture with
  ``mlp_ratio = 2H / D``. 2-D RoPE has no timm ``VisionTransformer`` twin and is refused.

``timm_model_args(backbone)`` gives the keyword arguments that build the matching timm model::

    arch, kwargs = timm_model_args(backbone)
    model = timm.create_model(arch, pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file='encoder.safetensors'), **kwargs)

A CIFAR-stem ResNet (3x3 stride-1 stem, no max-pool) has no timm constructor argument; after
``create_model`` replace ``model.conv1`` by ``nn.Conv2d(3, width, 3, 1, 1, bias=False)`` and
``model.maxpool`` by ``nn.Identity()`` before loading (``export_timm`` writes this note into
``timm_config.json``; ``ssl_jax.export.timm_model`` does it). A ResNet of width w other than 64
is timm's with ``stem_width=w, channels=(w, 2w, 4w, 8w)``. Parity with timm is tested in tests/export/test_timm.py.
"""
from __future__ import annotations

import re

import jax
import numpy as np
from flax import traverse_util

from ssl_jax import paths
from ssl_jax.data import image_ops
from ssl_jax.models import resnet as resnet_lib
from ssl_jax.models import swin as swin_lib
from ssl_jax.models import vit as vit_lib

_VIT_ARCH = {192: 'vit_tiny_patch16_224', 384: 'vit_small_patch16_224',
             768: 'vit_base_patch16_224', 1024: 'vit_large_patch16_224'}


def _np(x) -> np.ndarray:
  return np.asarray(jax.device_get(x), np.float32)


def _leaf_to_torch(path: tuple[str, ...], value: np.ndarray):
  """(torch name suffix, tensor) for one flax leaf: kernel/scale/bias/mean/var renames."""
  last = path[-1]
  if last == 'kernel':
    if value.ndim == 4:   # HWIO -> OIHW
      return 'weight', np.transpose(value, (3, 2, 0, 1))
    return 'weight', value.T
  return {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
          'var': 'running_var'}.get(last, last), value


_SWIN_BLOCK = re.compile(r'layers_(\d+)_blocks_(\d+)$')
_SWIN_MERGE = re.compile(r'layers_(\d+)_downsample$')


def _module_name(path: tuple[str, ...]) -> str:
  """flax module path -> torch dotted name: ``layer1_0/downsample_1`` -> ``layer1.0.downsample.1``,
  ``blocks_3/attn/qkv`` -> ``blocks.3.attn.qkv``; Swin ``layers_1_blocks_0`` ->
  ``layers.1.blocks.0`` and ``layers_0_downsample`` (end of stage 0, Swin v1) ->
  ``layers.1.downsample`` (timm >= 0.9 merges at the start of the next stage)."""
  parts = []
  for p in path:
    if m := _SWIN_BLOCK.match(p):
      parts += ['layers', m[1], 'blocks', m[2]]
      continue
    if m := _SWIN_MERGE.match(p):
      parts += ['layers', str(int(m[1]) + 1), 'downsample']
      continue
    head, sep, tail = p.rpartition('_')
    if sep and tail.isdigit() and head and (head.startswith('layer') or head in (
        'blocks', 'downsample')):
      parts += [head, tail]
    else:
      parts.append(p)
  return '.'.join(parts)


def to_timm_state_dict(backbone, variables) -> dict[str, np.ndarray]:
  """timm state dict (name -> float32 numpy array) of a ResNet, ViT or Swin's flax ``variables``."""
  params = traverse_util.flatten_dict(jax.device_get(variables['params']))
  out = {}
  for path, value in params.items():
    value = _np(value)
    if len(path) == 1:   # cls_token, reg_token, pos_embed: same name, same layout
      out[path[0]] = value
      continue
    suffix, tensor = _leaf_to_torch(path, value)
    out[f'{_module_name(path[:-1])}.{suffix}'] = tensor
  stats = traverse_util.flatten_dict(jax.device_get(variables.get('batch_stats', {})))
  for path, value in stats.items():
    suffix, tensor = _leaf_to_torch(path, _np(value))
    out[f'{_module_name(path[:-1])}.{suffix}'] = tensor
  if stats:
    for name in {k.rsplit('.', 1)[0] for k in out if k.endswith('running_mean')}:
      out[f'{name}.num_batches_tracked'] = np.zeros((), np.int64)
  if isinstance(backbone, vit_lib.ViT) and backbone.pos_embed == 'sincos':
    out['pos_embed'] = vit_lib.sincos_2d_pos_embed(backbone.embed_dim, backbone.grid_size,
                                                   backbone.num_prefix_tokens)[None]
  if isinstance(backbone, vit_lib.ViT) and backbone.num_registers:
    out = _merge_registers(backbone, out)
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _merge_registers(backbone, sd: dict) -> dict:
  """ssl_jax's ``register_tokens`` -> the tail of timm's ``reg_token``, with zero ``pos_embed``
  rows at their positions (sequence [cls, reg..., registers..., patches] in both)."""
  sd = dict(sd)
  p, regs = backbone.num_prefix_tokens, sd.pop('register_tokens')
  if p < 1:
    raise ValueError('timm places register tokens after a class token; this ViT has '
                     'num_prefix_tokens=0 (use the Orbax encoder export)')
  sd['reg_token'] = np.concatenate([sd['reg_token'], regs], 1) if 'reg_token' in sd else regs
  if 'pos_embed' in sd:
    pe = sd['pos_embed']
    sd['pos_embed'] = np.concatenate(
        [pe[:, :p], np.zeros((1, regs.shape[1], pe.shape[2]), pe.dtype), pe[:, p:]], 1)
  return sd


def _split_registers(backbone, sd: dict) -> dict:
  """Inverse of :func:`_merge_registers` (a state dict that already holds ``register_tokens``,
  e.g. DINOv2's, is returned as it is)."""
  if 'register_tokens' in sd:
    return sd
  sd, p, r = dict(sd), backbone.num_prefix_tokens, backbone.num_registers
  reg = sd.pop('reg_token')
  if reg.shape[1] != p - 1 + r:
    raise ValueError(f'timm reg_token holds {reg.shape[1]} tokens, this ViT needs '
                     f'{p - 1} prefix + {r} register tokens')
  sd['register_tokens'] = reg[:, p - 1:]
  if p > 1:
    sd['reg_token'] = reg[:, :p - 1]
  if 'pos_embed' in sd:
    sd['pos_embed'] = np.concatenate([sd['pos_embed'][:, :p], sd['pos_embed'][:, p + r:]], 1)
  return sd


def from_timm_state_dict(backbone, state_dict) -> dict:
  """Inverse of :func:`to_timm_state_dict`: flax variables of ``backbone`` from a timm state dict
  (numpy or torch tensors). Extra keys (a classifier ``head``/``fc``, ``fc_norm`` if it is the
  identity) are ignored; a missing key raises KeyError naming it."""
  sd = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, 'detach') else v)
        for k, v in state_dict.items()}
  if isinstance(backbone, vit_lib.ViT) and backbone.num_registers:
    sd = _split_registers(backbone, sd)
  template = jax.eval_shape(_init_fn(backbone))
  params = traverse_util.flatten_dict(template['params'])
  out_params = {}
  for path, spec in params.items():
    if len(path) == 1:
      key = path[0]
      if key not in sd:
        raise KeyError(f'state dict has no {key!r} (needed for flax {key})')
      tensor = sd[key]
    else:
      suffix, _ = _leaf_to_torch(path, np.zeros((1,) * len(spec.shape)))
      key = f'{_module_name(path[:-1])}.{suffix}'
      if key not in sd:
        raise KeyError(f'timm state dict has no {key!r} (needed for flax {"/".join(path)})')
      tensor = sd[key]
      if path[-1] == 'kernel':
        tensor = np.transpose(tensor, (2, 3, 1, 0)) if tensor.ndim == 4 else tensor.T
    if tuple(tensor.shape) != tuple(spec.shape):
      raise ValueError(f'{key}: shape {tuple(tensor.shape)} does not match flax '
                       f'{"/".join(path)} {tuple(spec.shape)}')
    out_params[path] = np.asarray(tensor, np.float32)
  variables = {'params': traverse_util.unflatten_dict(out_params)}
  if 'batch_stats' in template:
    stats = {}
    for path in traverse_util.flatten_dict(template['batch_stats']):
      suffix, _ = _leaf_to_torch(path, np.zeros(()))
      stats[path] = np.asarray(sd[f'{_module_name(path[:-1])}.{suffix}'], np.float32)
    variables['batch_stats'] = traverse_util.unflatten_dict(stats)
  return variables


def _init_fn(backbone):
  if isinstance(backbone, (vit_lib.ViT, swin_lib.Swin)):
    shape = (1, backbone.img_size, backbone.img_size, 3)
  else:
    shape = (1, 32, 32, 3)
  return lambda: backbone.init(jax.random.PRNGKey(0), np.zeros(shape, np.float32))


def timm_model_args(backbone) -> tuple[str, dict]:
  """(timm architecture name, keyword arguments) building timm's twin of ``backbone`` with
  ``num_classes=0`` (pooled features out)."""
  if isinstance(backbone, vit_lib.ViT):
    p = backbone.num_prefix_tokens
    if p >= 1 and backbone.pool == 'token' and backbone.pool_token != 0:
      raise ValueError(f'timm pools prefix token 0 only, this ViT pools token '
                       f'{backbone.pool_token} (model.pool_token); use the Orbax encoder export')
    if backbone.rope:
      raise ValueError('timm\'s VisionTransformer has no 2-D RoPE (model.rope=True); use the '
                       'Orbax encoder export')
    if backbone.layer_norm_eps != 1e-6:
      raise ValueError(f'timm\'s VisionTransformer uses LayerNorm eps 1e-6, this ViT '
                       f'{backbone.layer_norm_eps}; use the Orbax encoder export')
    kw = dict(img_size=backbone.img_size, patch_size=backbone.patch_size,
              embed_dim=backbone.embed_dim, depth=backbone.depth, num_heads=backbone.num_heads,
              mlp_ratio=backbone.mlp_ratio, qkv_bias=backbone.qkv_bias, num_classes=0,
              class_token=p >= 1, reg_tokens=max(p - 1, 0) + backbone.num_registers,
              global_pool='token' if p >= 1 and backbone.pool == 'token' else 'avg',
              fc_norm=False)
    if backbone.num_registers and p < 1:
      raise ValueError('timm places register tokens after a class token; this ViT has '
                       'num_prefix_tokens=0 (use the Orbax encoder export)')
    if backbone.pos_embed == 'none':
      kw['pos_embed'] = 'none'
    # Defaults-off parts stay out of the kwargs, so older timm versions build plain ViTs.
    if backbone.layerscale_init:
      kw['init_values'] = float(backbone.layerscale_init)
    if backbone.qk_norm:
      kw['qk_norm'] = True
    arch = _VIT_ARCH.get(backbone.embed_dim, 'vit_base_patch16_224')
    if backbone.mlp == 'swiglu':
      # The DINOv2 ViT-g architecture brings SwiGLUPacked + SiLU (classes, not JSON); every
      # other argument of it is overridden here. int(D * ratio) must be exactly 2H.
      hidden = vit_lib.swiglu_hidden_dim(backbone.embed_dim, backbone.mlp_ratio)
      arch = 'vit_giant_patch14_dinov2'
      kw['mlp_ratio'] = (2 * hidden + 0.5) / backbone.embed_dim
      kw.setdefault('init_values', 0.0)   # falsy: no LayerScale (create_model drops None)
    return arch, kw
  if isinstance(backbone, resnet_lib.ResNet):
    arch = {(2, 2, 2, 2): 'resnet18', (3, 4, 6, 3): 'resnet50'}.get(tuple(backbone.stage_sizes))
    if arch is None:
      raise ValueError(f'timm has no ResNet with stage sizes {tuple(backbone.stage_sizes)}; only '
                       'ResNet-18 (2, 2, 2, 2) and ResNet-50 (3, 4, 6, 3) export to a timm model')
    w = backbone.width   # narrow CPU models: timm takes the stage widths; the stem is fixed up
    kw = dict(num_classes=0) if w == 64 else dict(num_classes=0, channels=(w, 2 * w, 4 * w, 8 * w))
    return arch, kw
  if isinstance(backbone, swin_lib.Swin):
    kw = dict(img_size=backbone.img_size, patch_size=backbone.patch_size,
              embed_dim=backbone.embed_dim, depths=tuple(backbone.depths),
              num_heads=tuple(backbone.num_heads), window_size=backbone.window_size,
              mlp_ratio=backbone.mlp_ratio, num_classes=0, global_pool='avg')
    return 'swin_tiny_patch4_window7_224', kw
  raise TypeError(f'no timm layout for {type(backbone).__name__}')


def export_timm(backbone, variables, directory: str, encoder_input=None) -> str:
  """Writes ``directory/model.safetensors`` (timm layout) and ``directory/timm_config.json``
  (architecture, model_args, the CIFAR-stem note where it applies, and ``input``: the encoder's
  preprocessing, ``data.image_ops.encoder_input`` kwargs, when given); returns the weights path."""
  from safetensors.numpy import save as to_bytes  # pylint: disable=g-import-not-at-top
  arch, kw = timm_model_args(backbone)   # first: an unsupported backbone leaves no files
  directory = paths.as_path(directory)   # gs://... stays a URL
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / 'model.safetensors'
  path.write_bytes(to_bytes(to_timm_state_dict(backbone, variables)))
  cfg = {'architecture': arch, 'model_args': kw}
  if encoder_input is not None:
    cfg['input'] = image_ops.encoder_input_spec(**encoder_input)
  if isinstance(backbone, resnet_lib.ResNet):
    cfg['stem'] = {'cifar': bool(backbone.cifar_stem), 'width': backbone.width}
    if backbone.cifar_stem or backbone.width != 64:
      cfg['note'] = ('ssl_jax.export.timm_model(dir) builds this model: timm.create_model, then '
                     f'the stem of width {backbone.width}' +
                     (' (3x3 stride-1 conv, no max-pool)' if backbone.cifar_stem else '') +
                     ' in model.conv1 / bn1 / layer1[0], then the weights')
  paths.write_json_atomic(directory / 'timm_config.json', cfg)
  return str(path)


def _timm_dir(directory):
  """The folder holding ``timm_config.json`` among ``directory``, ``/export/timm``, ``/timm``."""
  base = paths.as_path(directory)
  for cand in (base, base / 'timm', base / 'export' / 'timm'):
    if (cand / 'timm_config.json').exists():
      return cand
  raise FileNotFoundError(
      f'no timm export under {directory} (looked for timm_config.json in it, timm/ and '
      'export/timm/); run --mode=export first, on a backbone with a timm twin (ViT, Swin, '
      'ResNet-18/50)')


def _version(package: str) -> str:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return '(not installed)'


def _fix_resnet_stem(nn, model, width: int, cifar: bool):
  """timm's plain ResNet stem is 64 channels, 7x7 / 2 with max-pool: a CIFAR stem (3x3 / 1, no
  max-pool) or a stem of another width is swapped in, with layer1's first block reading it."""
  if cifar:
    model.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
  elif width != 64:
    model.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
  if width == 64:
    return
  model.bn1 = nn.BatchNorm2d(width)
  block = model.layer1[0]
  out = block.conv1.out_channels
  block.conv1 = nn.Conv2d(width, out, block.conv1.kernel_size, block.conv1.stride,
                          block.conv1.padding, bias=False)
  planes_out = (block.bn3 if hasattr(block, 'bn3') else block.bn2).num_features   # Bottleneck / Basic
  if planes_out == width:
    block.downsample = None   # BasicBlock: the stem already has layer1's width
  elif block.downsample is not None:
    block.downsample[0] = nn.Conv2d(width, planes_out, 1, 1, bias=False)


def load_timm_model(directory):
  """timm model of an export: ``timm.create_model(architecture, **model_args)``, the CIFAR stem
  restored where the export notes one, weights loaded strictly, eval mode."""
  import json  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  try:
    import timm as timm_pt  # pylint: disable=g-import-not-at-top
  except RuntimeError as e:  # torchvision built for another torch (e.g. CUDA wheels, CPU torch)
    raise RuntimeError(f'timm failed to import ({e}); torchvision {_version("torchvision")} does '
                       f'not match torch {torch.__version__}: install the matching pair, e.g. '
                       'pip install torch torchvision --index-url '
                       'https://download.pytorch.org/whl/cpu') from e
  from safetensors.torch import load as load_bytes  # pylint: disable=g-import-not-at-top
  folder = _timm_dir(directory)
  cfg = json.loads((folder / 'timm_config.json').read_text())
  model = timm_pt.create_model(cfg['architecture'], pretrained=False, **cfg['model_args'])
  if 'stem' in cfg:
    _fix_resnet_stem(torch.nn, model, cfg['stem']['width'], cfg['stem']['cifar'])
  model.load_state_dict(load_bytes((folder / 'model.safetensors').read_bytes()))
  inp, extra = cfg.get('input') or {}, {}
  if inp.get('mean') is not None:   # timm.data.resolve_data_config reads these
    extra.update(mean=tuple(inp['mean']), std=tuple(inp['std']))
  if inp.get('color', 'rgb') != 'rgb':   # timm's transforms keep RGB: convert first
    extra['ssl_jax_input_color'] = inp['color']
  if extra:
    model.pretrained_cfg = dict(model.pretrained_cfg or {}, **extra)
  return model.eval()
