"""Typed method hyper-parameters (ssl_jax/methods/hparams.py): every config variant's method
section is declared, a typo or a wrong type stops with the field named, the dataclasses compose
along the method classes, and config.validate imports no method module. No JAX work here."""
import ast
import dataclasses
import glob
import importlib
import os
import re
import subprocess
import sys

import pytest

from configs import dino, ibot, moco, mocov3, simclr
from ssl_jax import methods
from ssl_jax.methods import common, hparams

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def config_variants():
  """(config file, variant) for every variant a configs/*.py docstring names (``builtin``,
  ``v1_imagenet``, ``imagenet,vit_base``, ...) or that every config has, where its get_config
  accepts it."""
  out = []
  for path in sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py'))):
    name = os.path.basename(path)[:-3]
    if name.startswith('_'):
      continue
    module = importlib.import_module(f'configs.{name}')
    names = set(re.findall(r'``([a-z0-9_]+(?:,[a-z0-9_]+)?)``', module.__doc__ or ''))
    for variant in sorted(names | {'builtin', 'cifar10', 'imagenet', 'librispeech'}):
      try:
        module.get_config(variant)
      except ValueError as e:
        if 'unknown variant' in str(e):
          continue
        raise
      out.append((name, variant))
  return out


VARIANTS = config_variants()


def test_the_sweep_sees_every_config_and_its_variants():
  files = {n for n, _ in VARIANTS}
  assert len(files) >= 28 and {'moco', 'mocov3', 'simmim', 'data2vec'} <= files
  assert ('moco', 'v1_imagenet') in VARIANTS and ('simmim', 'imagenet,swin_base') in VARIANTS
  # Image configs have the three common variants; speech configs builtin and librispeech.
  speech = {n for n in files
            if importlib.import_module(f'configs.{n}').get_config().data.modality == 'audio'}
  assert {'wav2vec2', 'data2vec_audio', 'hubert'} <= speech
  assert all((n, v) in VARIANTS for n in files - speech for v in ('builtin', 'cifar10', 'imagenet'))
  assert all((n, v) in VARIANTS for n in speech for v in ('builtin', 'librispeech'))
  assert len({importlib.import_module(f'configs.{n}').get_config(v).method.name
              for n, v in VARIANTS}) == len(methods.METHODS)


@pytest.mark.parametrize('name,variant', VARIANTS, ids=[f'{n}:{v}' for n, v in VARIANTS])
def test_every_config_variant_declares_only_method_fields(name, variant):
  config = importlib.import_module(f'configs.{name}').get_config(variant)
  hp = methods.method_hparams(config)
  for key, value in config.method.items():
    if key != 'name':
      want = tuple(value) if isinstance(value, list) else value
      got = getattr(hp, key)
      assert got == want or dataclasses.is_dataclass(got), (key, got, want)


def test_misspelled_field_says_did_you_mean():
  c = simclr.get_config('builtin')
  c.method.temperatur = 0.1
  with pytest.raises(ValueError) as e:
    methods.method_hparams(c)
  assert str(e.value) == ('config.method.temperatur is not a field of simclr '
                          '(did you mean config.method.temperature?)')


def test_unknown_field_far_from_any_lists_the_fields():
  c = simclr.get_config('builtin')
  c.method.queue_size = 4096   # a MoCo field: SimCLR has no queue
  with pytest.raises(ValueError, match=r'config.method.queue_size is not a field of simclr '
                                       r"\(its fields are \['proj_dim', "):
    methods.method_hparams(c)


def test_wrong_type_names_the_field():
  c = simclr.get_config('builtin')
  del c.method['temperature']
  c.method.temperature = 'warm'
  with pytest.raises(ValueError, match=r"config.method.temperature='warm' \(str\) must be a "
                                       'number'):
    methods.method_hparams(c)
  c = dino.get_config('builtin')
  del c.method['global_crop_scale']
  c.method.global_crop_scale = (0.25, 'all')
  with pytest.raises(ValueError, match=r'config.method.global_crop_scale=.*must be a tuple of 2'):
    methods.method_hparams(c)
  c = dino.get_config('builtin')
  del c.method['norm_last_layer']
  c.method.norm_last_layer = 1
  with pytest.raises(ValueError, match=r'config.method.norm_last_layer=1 \(int\) must be a bool'):
    methods.method_hparams(c)


def test_required_field_missing_is_named():
  c = simclr.get_config('builtin')
  del c.method['temperature']
  with pytest.raises(ValueError, match='config.method.temperature is required by simclr'):
    methods.method_hparams(c)


def test_nested_section_is_typed_too():
  from configs import beit  # pylint: disable=g-import-not-at-top
  c = beit.get_config('builtin')
  hp = methods.method_hparams(c)
  assert hp.tokenizer.downsample == 4 and hp.tokenizer.l2_codes is True
  c.method.tokenizer.num_code = 16
  with pytest.raises(ValueError, match=r'config.method.tokenizer.num_code is not a field of beit '
                                       r'\(did you mean config.method.tokenizer.num_codes\?\)'):
    methods.method_hparams(c)


def test_values_are_converted_and_frozen():
  c = simclr.get_config('builtin')
  c.method.temperature = 1      # an int where a float is declared
  hp = methods.method_hparams(c)
  assert hp.temperature == 1.0 and isinstance(hp.temperature, float)
  with pytest.raises(dataclasses.FrozenInstanceError):
    hp.temperature = 0.5
  c = dino.get_config('builtin')
  del c.method['local_crop_scale']
  c.method.local_crop_scale = [0.05, 0.25]   # a list (from YAML / a plain dict) becomes a tuple
  assert methods.method_hparams(c).local_crop_scale == (0.05, 0.25)


def test_inheritance_composes_the_dataclasses():
  ibot_cls, dino_cls = (methods.method_class(n) for n in ('ibot', 'dino'))
  assert issubclass(ibot_cls.Hparams, dino_cls.Hparams)
  dino_fields = {f.name for f in dataclasses.fields(dino_cls.Hparams)}
  assert dino_fields < {f.name for f in dataclasses.fields(ibot_cls.Hparams)}
  assert {'momentum', 'momentum_final', 'teacher_temp'} <= dino_fields
  hp = methods.method_hparams(ibot.get_config('builtin'))
  assert isinstance(hp, dino_cls.Hparams) and hp.lambda2 > 0
  # MoCo v3 and BYOL have a predictor; MoCo v1/v2 has none, so pred_* is a typo there.
  v3 = methods.method_class('mocov3').Hparams
  assert issubclass(v3, common.PredictorHparams) and issubclass(v3, common.EMAHparams)
  assert methods.method_hparams(mocov3.get_config('builtin')).pred_layers == 2
  c = moco.get_config('builtin')
  c.method.pred_layers = 2
  with pytest.raises(ValueError, match='config.method.pred_layers is not a field of moco'):
    methods.method_hparams(c)
  # Defaults come from one declaration, shared by every method with an EMA target.
  assert common.EMAHparams().momentum == 0.996 and common.EMAHparams().momentum_final == 1.0
  c = moco.get_config('builtin')
  del c.method['lr_schedule']
  assert methods.method_hparams(c).lr_schedule == 'cosine'


def test_every_method_declares_a_frozen_hparams_dataclass():
  for name in methods.METHODS:
    cls = methods.method_class(name).Hparams
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, name
    assert issubclass(cls, hparams.Hparams), name


def _method_section_reads(tree):
  """Line numbers of ``<x>.config.method`` / ``config.method`` attribute reads in ``tree``."""
  lines = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and node.attr == 'method':
      base = node.value
      name = base.attr if isinstance(base, ast.Attribute) else getattr(base, 'id', '')
      if name == 'config':
        lines.append(node.lineno)
  return lines


def test_methods_read_hparams_not_the_config_section():
  """Only Method.__init__ (base.py) and the registry read config.method; every method reads
  self.hp, so a field cannot get a second, scattered default."""
  allowed = {'base.py', '__init__.py'}
  offenders = []
  for path in glob.glob(os.path.join(ROOT, 'ssl_jax', 'methods', '**', '*.py'), recursive=True):
    rel = os.path.relpath(path, os.path.join(ROOT, 'ssl_jax', 'methods'))
    if rel in allowed:
      continue
    with open(path) as f:
      lines = _method_section_reads(ast.parse(f.read()))
    offenders += [f'{rel}:{n}' for n in lines]
  assert not offenders, offenders


def test_config_validate_imports_no_method_module():
  code = ('import sys; from configs import simclr; from ssl_jax import config; '
          "config.validate(simclr.get_config('builtin')); "
          "print(sorted(m for m in sys.modules if m.startswith('ssl_jax.methods.')))")
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), check=True).stdout
  assert out.strip() == "['ssl_jax.methods.hparams']", out
