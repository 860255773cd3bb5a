"""The command line shows what exists (--list) and fails in one line (issue 33)."""
import importlib

import pytest

from ssl_jax import catalog
from ssl_jax import config as config_lib
from tests.test_bad_inputs import _cli


def test_every_listed_variant_of_every_config_loads_and_validates():
  """--list's variants are what the configs accept: each one builds a valid config."""
  names = catalog.config_modules()
  assert {'simclr', 'dino', 'mae', 'moco', 'mocov3', 'simmim'} <= set(names)
  for name in names:
    variants, _ = catalog.config_variants(name)
    assert 'builtin' in variants, (name, variants)
    module = importlib.import_module(f'configs.{name}')
    for variant in variants:
      try:
        config_lib.validate(module.get_config(variant))
      except ValueError as e:  # a folder variant needs the user's --config.data.path, nothing else
        assert str(e).startswith('config.data.path: is empty'), (name, variant, str(e))


def test_listed_variants_are_parsed_from_the_error_message():
  variants, note = catalog.config_variants('moco')
  assert variants == ['builtin', 'cifar10', 'imagenet', 'v1_builtin', 'v1_cifar10', 'v1_imagenet']
  variants, note = catalog.config_variants('mae')
  assert variants == ['builtin', 'cifar10', 'imagenet'] and 'vit_small' in note


def test_list_prints_methods_configs_backbones_datasets(tmp_path):
  rc, lines, text = _cli(['--list'], tmp_path)
  assert rc == 0, text
  assert 'methods (config.method.name):' in lines
  assert any(l.split()[:1] == ['simclr'] and 'builtin, cifar10, imagenet' in l for l in lines)
  assert any('resnet18' in l and 'vit_small' in l for l in lines)
  assert any(l.strip().startswith('builtin: mnist5k') for l in lines)


@pytest.mark.parametrize('args,message', [
    (['--config=configs/simclr.py:builtin'], '--workdir is required'),
    (['--workdir=/tmp/x'], '--config is required'),
])
def test_usage_errors_are_one_line(tmp_path, args, message):
  if '--workdir=/tmp/x' in args:
    args = ['--workdir=' + str(tmp_path)]
  rc, lines, text = _cli(args, tmp_path)
  assert rc == 2, text
  assert len(lines) == 1 and lines[0].startswith('ssl_jax: usage error: ') and message in lines[0], text


@pytest.mark.parametrize('backbone', ['vit_tiny', 'resnet18'])
def test_every_config_takes_the_backbone_suffix(backbone):
  """configs/NAME.py:builtin,BACKBONE builds that backbone, or stops in one line saying why (a
  method that needs a ViT, a size the backbone cannot take)."""
  from ssl_jax import methods  # pylint: disable=g-import-not-at-top
  built, refused = [], []
  speech = []
  for name in catalog.config_modules():
    module = importlib.import_module(f'configs.{name}')
    if module.get_config('builtin').data.modality == 'audio':
      # Speech configs take ',<speech encoder>' and refuse an image backbone in one line.
      assert module.get_config('builtin,wav2vec2_base').model.backbone == 'wav2vec2_base'
      with pytest.raises(ValueError, match=f'{backbone!r} is not a speech encoder') as e:
        module.get_config(f'builtin,{backbone}')
      assert '\n' not in str(e.value)
      speech.append(name)
      continue
    try:
      config = module.get_config(f'builtin,{backbone}')
      assert config.model.backbone == backbone, name
      config_lib.validate(config)
      if 'tokenizer' in config.method:
        config.method.tokenizer_random_init = True
      methods.build_method(config)
      built.append(name)
    except ValueError as e:
      assert '\n' not in str(e) and ('ViT' in str(e) or 'multiple' in str(e)), (name, str(e))
      refused.append(name)
  # Every ResNet config takes a ViT and the contrastive ones at least take both.
  assert {'simclr', 'byol', 'moco', 'mocov3', 'swav', 'vicreg', 'dino', 'rotation'} <= set(built), (
      built, refused)
  if backbone == 'vit_tiny':
    assert len(built) >= len(catalog.config_modules()) - len(speech) - 1, refused
  assert len(speech) == 3, speech
