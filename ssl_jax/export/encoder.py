"""Encoder-only checkpoints: the backbone's flax variables plus a JSON description of the module,
loadable with one call and no dependence on the SSL method (or its heads, teacher, optimizer)::

    from ssl_jax.export import load_encoder
    model, variables = load_encoder('/tmp/run/encoder')
    feats = model.apply(variables, images_nhwc_float)      # (B, D) pooled features

Layout of ``DIR``::

    DIR/encoder.json   {"module": "resnet"|"vit"|"swin"|"registered", "kwargs": {...},
                        "feature_dim": D,
                        "color": "rgb"|"gray"|"cie_l", "mean": [...], "std": [...]}
    DIR/variables/     Orbax (StandardCheckpointer) pytree {'params': ..., ['batch_stats': ...]}

color / mean / std are the eval preprocessing: NHWC RGB floats in [0, 1], turned into the colour
the encoder was trained on (grey for colorization, CIE L for CMC's L view; an export without
"color" is RGB), then ``(x - mean) / std``; ``preprocess`` does it
(``ssl_jax.data.image_ops.encoder_input``).
"""
from __future__ import annotations

import json

import jax
import numpy as np

from ssl_jax import models
from ssl_jax import paths
from ssl_jax.data import image_ops
from ssl_jax.models import resnet as resnet_lib
from ssl_jax.models import swin as swin_lib
from ssl_jax.models import vit as vit_lib

_BLOCKS = {'BasicBlock': resnet_lib.BasicBlock, 'Bottleneck': resnet_lib.Bottleneck}
_VIT_FIELDS = ('img_size', 'patch_size', 'in_chans', 'embed_dim', 'depth', 'num_heads',
               'mlp_ratio', 'qkv_bias', 'num_prefix_tokens', 'pos_embed', 'layer_norm_eps',
               'pool', 'pool_token', 'num_registers', 'layerscale_init', 'mlp', 'qk_norm',
               'rope', 'rope_base', 'pos_embed_antialias')


def module_spec(backbone, model_config=None) -> dict:
  """JSON-serialisable description from which :func:`build_module` rebuilds ``backbone`` (in
  float32, eval-only: drop-path / remat settings are training concerns and are not kept). A
  backbone added with ``ssl_jax.register_backbone`` is described by its name and ``model_config``
  (``config.model``) and rebuilt by its factory, registered again before loading."""
  if model_config is not None and models.registered_backbone(model_config.backbone):
    return {'module': 'registered', 'name': model_config.backbone,
            'kwargs': model_config.to_dict()}
  if isinstance(backbone, vit_lib.ViT):
    return {'module': 'vit', 'kwargs': {f: getattr(backbone, f) for f in _VIT_FIELDS}}
  if isinstance(backbone, resnet_lib.ResNet):
    return {'module': 'resnet', 'kwargs': {
        'stage_sizes': list(backbone.stage_sizes), 'block': backbone.block.__name__,
        'width': backbone.width, 'cifar_stem': backbone.cifar_stem}}
  if isinstance(backbone, swin_lib.Swin):
    return {'module': 'swin', 'kwargs': {
        'img_size': backbone.img_size, 'patch_size': backbone.patch_size,
        'embed_dim': backbone.embed_dim,
        'depths': list(backbone.depths), 'num_heads': list(backbone.num_heads),
        'window_size': backbone.window_size, 'mlp_ratio': backbone.mlp_ratio}}
  raise TypeError(f'cannot export a {type(backbone).__name__}; expected a ResNet, ViT or Swin')


def build_module(spec: dict):
  """The plain flax module described by :func:`module_spec`."""
  kw = dict(spec['kwargs'])
  if spec['module'] == 'registered':
    import ml_collections  # pylint: disable=g-import-not-at-top
    entry = models.registered_backbone(spec['name'])
    if entry is None:
      raise ValueError(f"encoder.json describes the user backbone {spec['name']!r}: call "
                       f"ssl_jax.register_backbone({spec['name']!r}, ...) before load_encoder")
    return entry[0](ml_collections.ConfigDict(kw))
  if spec['module'] == 'vit':
    return vit_lib.ViT(**kw)
  if spec['module'] == 'swin':
    kw['depths'], kw['num_heads'] = tuple(kw['depths']), tuple(kw['num_heads'])
    return swin_lib.Swin(**kw)
  if spec['module'] == 'resnet':
    kw['block'] = _BLOCKS[kw['block']]
    kw['stage_sizes'] = tuple(kw['stage_sizes'])
    return resnet_lib.ResNet(**kw)
  raise ValueError(f"unknown module {spec['module']!r} in encoder.json")


def save_encoder(directory: str, backbone, variables, *, mean=None, std=None, color='rgb',
                 model_config=None) -> str:
  """Writes ``backbone``'s ``variables`` (params [+ batch_stats]) and its description to
  ``directory`` (created; must not already hold an encoder; ``model_config``: the run's
  ``config.model``, needed for a registered user backbone; color / mean / std: the input, as
  ``image_ops.encoder_input`` takes it). Returns ``directory``."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = paths.as_path(directory)   # gs://... stays a URL
  directory.mkdir(parents=True, exist_ok=True)
  spec = module_spec(backbone, model_config)
  spec['feature_dim'] = int(models.feature_dim(backbone, model_config))
  spec.update(image_ops.encoder_input_spec(color, mean, std))
  host = jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), dict(variables))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(directory / 'variables', host)
  if jax.process_index() == 0:
    paths.write_json_atomic(directory / 'encoder.json', spec)
  return str(directory)


def load_encoder(directory: str):
  """(flax module, variables) of the encoder saved in ``directory`` by :func:`save_encoder`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = paths.as_path(directory)
  spec = json.loads((directory / 'encoder.json').read_text())
  with ocp.StandardCheckpointer() as ckptr:
    variables = ckptr.restore(directory / 'variables')
  return build_module(spec), dict(variables)


def preprocess(directory: str, images_uint8) -> np.ndarray:
  """uint8 NHWC images -> the normalised float32 input the exported encoder expects."""
  spec = json.loads((paths.as_path(directory) / 'encoder.json').read_text())
  x = np.asarray(images_uint8, np.float32) / 255.0
  return np.asarray(image_ops.encoder_input(x, spec.get('color', 'rgb'), spec.get('mean'),
                                            spec.get('std')), np.float32)
