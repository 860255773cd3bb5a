"""Acceptance (issue 29): every config's ``builtin`` variant goes pretrain -> eval (kNN, linear
probe, one fine-tune step) -> export (Orbax encoder, and timm where the backbone has a twin) ->
``ssl_jax.export.load_encoder``, and the loaded encoder gives the trained encoder's features.

Fine-tuning and export rebuild the backbone from ``config.model`` (``models.build_backbone``), so
a method that changed its backbone inside itself (SiT's two prefix tokens, MoCo v3's sin-cos /
frozen patch embedding) used to die here with a ``pos_embed`` shape mismatch.

Shrunk to the minimum: 16 px, the tests' tiny models (helpers.tiny), batch 8 on one device,
2 train steps, kNN / probe on the built-in set's test split, probe 1 epoch, fine-tune 1 step, all
in-process through the Python API (``ssl_jax.pretrain`` / ``evaluate`` / ``export.export``).
"""
import dataclasses
import glob
import importlib
import os

import jax
import numpy as np
import pytest
from flax import traverse_util

import ssl_jax
from ssl_jax.export import encoder as encoder_lib
from ssl_jax.export import timm as timm_lib
from ssl_jax import methods, models
from ssl_jax.train import loop
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def builtin_configs():
  """Every configs/<name>.py that has a 'builtin' variant (discovered, not listed)."""
  names = []
  for path in sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py'))):
    name = os.path.basename(path)[:-3]
    if name.startswith('_'):
      continue
    try:
      importlib.import_module(f'configs.{name}').get_config('builtin')
    except ValueError:   # no 'builtin' variant
      continue
    names.append(name)
  return names


CONFIGS = builtin_configs()


def tiny_config(name):
  """The builtin variant shrunk: 16 px (the next multiple of a tile method's grid), tiny heads."""
  c = importlib.import_module(f'configs.{name}').get_config('builtin')
  grid = c.method.get('grid', 1)
  helpers.tiny(c, image_size=-(-16 // grid) * grid, batch_size=8, steps=2)
  m = c.method
  if 'tile_size' in m:          # jigsaw / PIRL: 6 px cells
    m.tile_size = 4
  for field, small in (('num_permutations', 10), ('tile_dim', 8), ('head_hidden_dim', 16),
                       ('proj_hidden_dim', 32), ('pred_hidden_dim', 32), ('proj_dim', 16),
                       ('pred_dim', 16), ('num_negatives', 32)):
    if field in m and isinstance(m[field], int) and m[field] > small > 0:
      m[field] = small
  declared = {f.name for f in dataclasses.fields(methods.method_class(c.method.name).Hparams)}
  for field, small in (('decoder_dim', 16), ('decoder_depth', 1), ('decoder_heads', 2)):
    if field in declared:   # only the fields the method declares (methods/hparams.py)
      m[field] = small
  if 'tokenizer' in m:          # BEiT: a random tokenizer of the tests' size, no tokenizer run
    m.tokenizer.update(dict(hidden=8, code_dim=8, num_codes=16))
    m.tokenizer_random_init = True
  if name == 'vqvae':
    m.update(dict(hidden=8, code_dim=8, num_codes=16))
  c.data.eval_train_split = c.data.eval_split = 'test'   # kNN bank and probe: 1,000 images
  c.eval.knn_ks, c.eval.knn_k = (5,), 5
  c.eval.batch_size = 200
  c.eval.linear_epochs, c.eval.linear_batch_size = 1, 250
  c.eval.finetune_steps, c.eval.finetune_batch_size = 1, 8
  c.eval.plot = ''
  c.train.knn_every = 0
  return c


def _fields(module):
  return type(module), {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
                        if f.name not in ('parent', 'name')}


@pytest.mark.parametrize('name,variant', [(n, 'builtin') for n in CONFIGS] +
                         [('mocov3', 'builtin_vit')])
def test_method_backbone_is_the_config_backbone(name, variant):
  """The one backbone definition, checked without compiling: the backbone a method trains is
  exactly ``models.build_backbone(config.model)``, the one fine-tuning and export rebuild."""
  config = importlib.import_module(f'configs.{name}').get_config(variant)
  if 'tokenizer' in config.method:
    config.method.tokenizer_random_init = True
  method = methods.build_method(config)
  assert _fields(method.backbone) == _fields(models.build_backbone(config.model))


def test_every_builtin_config_is_found():
  assert {'simclr', 'sit', 'mocov3', 'mae', 'dino'} <= set(CONFIGS), CONFIGS
  assert set(DEFAULT_TIER) <= set(CONFIGS)


# The default tier takes one config down each distinct feature / export path (the base method's
# on a ResNet and on a ViT with prefix tokens, the methods that override ``features`` or
# ``encoder_variables``, a tokenizer with no encoder); the other configs repeat one of these paths
# and run in the full tier (tests/conftest.py: slow). ~30 s each on 2 cores; every method's own
# test file already trains it on 1 and 8 devices.
DEFAULT_TIER = ('simclr', 'sit', 'cmc', 'cpc', 'vqvae', 'dinov2', 'msn', 'ijepa', 'multimae')


@pytest.mark.parametrize('name', [n if n in DEFAULT_TIER else
                                  pytest.param(n, marks=pytest.mark.slow) for n in CONFIGS])
def test_pretrain_eval_export_load(name, tmp_path):
  config = tiny_config(name)
  mesh = helpers.mesh(1)
  workdir = str(tmp_path / 'run')
  ssl_jax.pretrain(config, workdir, mesh)
  result = ssl_jax.evaluate(config, workdir, mesh, require_checkpoint=True)
  assert result['step'] == 2
  assert 0.0 <= result['knn_top1'] <= 1.0 and 0.0 <= result['linear_top1'] <= 1.0
  if not methods.method_class(config.method.name).has_encoder:   # the VQ tokenizer
    assert 'finetune_skipped' in result
    with pytest.raises(ValueError, match='trains no image encoder'):
      ssl_jax.export.export(config, workdir, mesh)
    return
  assert np.isfinite(result['finetune_top1']), result

  exported = ssl_jax.export.export(config, workdir, mesh)
  model, variables = ssl_jax.export.load_encoder(exported['encoder'])

  # The trained encoder, restored from the run's checkpoint.
  exp = loop.Experiment(config, workdir, mesh)
  state, _ = exp.restore_or_init()
  exp.checkpointer.close()
  method = exp.method
  size = config.data.image_size
  images = np.random.RandomState(0).randint(0, 256, (4, size, size, 3)).astype(np.uint8)
  x = method.normalize(images)
  # The exported preprocessing is the method's eval input (grey for colorization, CIE L for CMC).
  np.testing.assert_allclose(encoder_lib.preprocess(exported['encoder'], images), np.asarray(x),
                             atol=1e-5)
  trained_vars = method.encoder_variables(state.params, state.buffers)
  trained = method.backbone.apply(trained_vars, x, train=False)
  loaded = model.apply(variables, x, train=False)
  np.testing.assert_allclose(np.asarray(loaded), np.asarray(trained), atol=1e-5, rtol=1e-5)
  if method.features_from_encoder:   # the eval feature is the encoder's pooled output
    feats = method.features(state.params, state.buffers, images)
    np.testing.assert_allclose(np.asarray(loaded), np.asarray(feats), atol=1e-5, rtol=1e-5)

  if 'timm' in exported:   # timm layout maps back to the same tensors
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    back = timm_lib.from_timm_state_dict(model, load_file(exported['timm']))
    flat = traverse_util.flatten_dict(jax.device_get(variables))
    for path, value in traverse_util.flatten_dict(back).items():
      np.testing.assert_allclose(value, np.asarray(flat[path]), atol=1e-6, err_msg=str(path))
  spec = encoder_lib.module_spec(model)
  assert spec['module'] in ('vit', 'resnet', 'swin')
