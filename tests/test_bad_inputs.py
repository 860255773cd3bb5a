"""The bad-input catalogue: every mistake a user can make stops early with a clear message.

Each case builds ``loop.Experiment`` (what ``python -m ssl_jax.main`` builds first) on the
8 simulated devices and checks the error type and the words of its message. Every case fails
before anything is compiled. The last tests run the real command line and check that the user sees
one line (no traceback) for a bad override, a bad value, a bad workdir.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import simclr
from ssl_jax import config as config_lib
from ssl_jax.data import sources
from ssl_jax.train import checkpoint as ckpt_lib
from ssl_jax.train import loop
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
  c = helpers.tiny(simclr.get_config('builtin'))
  c.data.name = 'digits'
  c.method.proj_hidden_dim = 16
  c.method.proj_dim = 8
  return c


def setter(path, value):
  def apply(c, tmp_path):
    *sections, key = path.split('.')
    node = c
    for s in sections:
      node = node[s]
    node[key] = value
  return apply


def vit(**model):
  def apply(c, tmp_path):
    c.model.backbone = 'vit_tiny'
    for k, v in model.items():
      if k == 'image_size':
        c.data.image_size = v
      else:
        c.model[k] = v
  return apply


def new_field(path, value):
  """Sets ``path`` bypassing ConfigDict's type safety (as a config built from a plain dict or
  YAML would arrive), or adds a field that the base config does not have."""
  def apply(c, tmp_path):
    section, key = path.rsplit('.', 1) if '.' in path else ('', path)
    node = c[section] if section else c
    if key in node:
      del node[key]
    node[key] = value
  return apply


def _image(path, size=8, corrupt=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if corrupt == 'zero':
    open(path, 'wb').close()
  elif corrupt == 'text':
    open(path, 'w').write('this is not a picture')
  else:
    rng = np.random.default_rng(abs(hash(path)) % 2**32)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(path)
    if corrupt == 'truncated':
      os.truncate(path, os.path.getsize(path) // 3)


def folder(layout):
  """A folder source: ``layout`` is a list of (relative path, corrupt kind or None)."""
  def apply(c, tmp_path):
    root = tmp_path / 'images'
    os.makedirs(root, exist_ok=True)
    for rel, kind in layout:
      if kind == 'notimage':
        open(root / rel, 'w').write('notes')
      else:
        _image(str(root / rel), corrupt=kind)
    c.data.source = 'folder'
    c.data.path = str(root)
  return apply


def workdir_is_file(c, tmp_path):
  open(tmp_path / 'wd', 'w').write('I am a file')
  return str(tmp_path / 'wd')


def workdir_below_file(c, tmp_path):
  open(tmp_path / 'f', 'w').write('x')
  return str(tmp_path / 'f' / 'run')


def workdir_readonly(c, tmp_path):
  if os.geteuid() != 0:  # root ignores permission bits; /sys is read-only for everyone
    os.makedirs(tmp_path / 'ro')
    os.chmod(tmp_path / 'ro', 0o500)
    return str(tmp_path / 'ro' / 'run')
  return '/sys/ssl_jax_unwritable_run'


def checkpoint_of_other_model(c, tmp_path):
  """A workdir holding a checkpoint written by a width-8 model (metadata is checked first)."""
  other = tiny_config()
  other.model.width = 8
  meta_exp = loop.Experiment(other, str(tmp_path / 'other_probe'), helpers.mesh(8))
  ckptr = ckpt_lib.Checkpointer(str(tmp_path / 'run'))
  ckptr.save(2, {'step': np.zeros((), np.int32)}, {}, meta_exp.meta)
  ckptr.close()
  return str(tmp_path / 'run')


CASES = {
    # -- config fields: names -------------------------------------------------------------------
    'misspelled_field': (new_field('train.stepz', 5), ValueError,
                         ['config.train.stepz', 'did you mean config.train.steps']),
    'misspelled_section': (new_field('trian', {}), ValueError, ['config.trian', 'config.train']),
    'misspelled_top_level': (new_field('sed', 1), ValueError, ['did you mean config.seed']),
    'unknown_method': (setter('method.name', 'simclrr'), ValueError,
                       ["'simclrr' is not a known method", "did you mean 'simclr'"]),
    'misspelled_method_field': (new_field('method.temperatur', 0.1), ValueError,
                                ['config.method.temperatur is not a field of simclr',
                                 'did you mean config.method.temperature?']),
    'method_field_string': (new_field('method.temperature', 'warm'), ValueError,
                            ["config.method.temperature='warm'", 'must be a number']),
    'unknown_backbone': (setter('model.backbone', 'resnet19'), ValueError,
                         ['config.model.backbone', "did you mean 'resnet18'"]),
    'unknown_optimizer': (setter('optim.name', 'adamm'), ValueError,
                          ['config.optim.name', "did you mean 'adamw'"]),
    'unknown_nan_policy': (setter('train.nan_policy', 'skipp'), ValueError,
                           ['config.train.nan_policy', "did you mean 'skip'"]),
    'unknown_dtype': (setter('model.dtype', 'float16'), ValueError, ['config.model.dtype']),
    'unknown_lr_scaling': (setter('optim.lr_scaling', 'lin'), ValueError, ['config.optim.lr_scaling']),
    # -- config fields: types and ranges ----------------------------------------------------------
    'steps_string': (new_field('train.steps', '100'), ValueError,
                     ['config.train.steps', 'must be an integer', "'100'"]),
    'lr_string': (new_field('optim.lr', '0.1'), ValueError, ['config.optim.lr', 'must be a number']),
    'seed_negative': (setter('seed', -1), ValueError, ['config.seed', 'non-negative integer']),
    'crop_scale_not_pair': (new_field('data.crop_scale', 0.5), ValueError,
                            ['config.data.crop_scale', 'pair']),
    'batch_zero': (setter('data.batch_size', 0), ValueError, ['config.data.batch_size',
                                                              'must be positive']),
    'image_size_negative': (setter('data.image_size', -16), ValueError,
                            ['config.data.image_size', 'must be positive']),
    'steps_zero': (setter('train.steps', 0), ValueError, ['config.train.steps', 'is 0',
                                                          'train.epochs']),
    'lr_negative': (setter('optim.lr', -0.1), ValueError, ['config.optim.lr', 'positive']),
    'warmup_negative': (setter('optim.warmup_steps', -5), ValueError, ['config.optim.warmup_steps']),
    'weight_decay_negative': (setter('optim.weight_decay', -1e-4), ValueError,
                              ['config.optim.weight_decay']),
    'keep_zero_checkpoints': (setter('train.keep_checkpoints', 0), ValueError,
                              ['config.train.keep_checkpoints']),
    'checkpoint_every_zero': (setter('train.checkpoint_every', 0), ValueError,
                              ['config.train.checkpoint_every']),
    'preemption_sync_every_zero': (setter('train.preemption_sync_every', 0), ValueError,
                                   ['config.train.preemption_sync_every', 'positive']),
    'knn_every_negative': (setter('train.knn_every', -1), ValueError, ['config.train.knn_every']),
    'flip_not_probability': (setter('data.flip', 1.5), ValueError, ['config.data.flip', '[0, 1]']),
    'eval_crop_frac_zero': (setter('data.eval_crop_frac', 0.0), ValueError,
                            ['config.data.eval_crop_frac']),
    # -- sizes vs devices and images ------------------------------------------------------------
    'batch_not_divisible_by_devices': (setter('data.batch_size', 12), ValueError,
                                       ['config.data.batch_size', 'not divisible', '(8)']),
    'eval_batch_not_divisible': (setter('eval.batch_size', 100), ValueError,
                                 ['config.eval.batch_size', 'not divisible']),
    'crop_min_above_max': (setter('data.crop_scale', (0.5, 0.2)), ValueError,
                           ['config.data.crop_scale', 'min <= max']),
    'crop_larger_than_image': (setter('data.crop_scale', (0.5, 1.5)), ValueError,
                               ['config.data.crop_scale', 'larger than the image']),
    'crops_far_larger_than_images': (setter('data.image_size', 64), ValueError,
                                     ['config.data.image_size=64', '8-px', 'max_upscale']),
    'vit_image_not_multiple_of_patch': (vit(patch_size=5), ValueError,
                                        ['not a multiple of model.patch_size=5']),
    'vit_patch_larger_than_image': (vit(patch_size=32), ValueError,
                                    ['config.model.patch_size', 'no larger than data.image_size']),
    # -- mesh ----------------------------------------------------------------------------------
    'mesh_shape_wrong_size': (setter('mesh.shape', (3,)), ValueError,
                              ['config.mesh.shape=(3,)', '8 are available']),
    'mesh_two_wildcards': (lambda c, t: (setter('mesh.shape', (-1, -1))(c, t),
                                         setter('mesh.axes', ('data', 'model'))(c, t)),
                           ValueError, ['more than one -1']),
    'mesh_axes_length': (setter('mesh.axes', ('data', 'model')), ValueError,
                         ['config.mesh.shape', 'differ in length']),
    # -- data ----------------------------------------------------------------------------------
    'unknown_data_source': (setter('data.source', 'hdf5'), ValueError,
                            ["config.data.source='hdf5'", 'builtin']),
    'unknown_builtin_dataset': (setter('data.name', 'mnist'), ValueError,
                                ["config.data.name='mnist'", 'mnist5k']),
    'folder_path_empty': (setter('data.source', 'folder'), ValueError, ['config.data.path', 'is empty']),
    'folder_missing': (lambda c, t: (setter('data.source', 'folder')(c, t),
                                     setter('data.path', str(t / 'nope'))(c, t)),
                       FileNotFoundError, ['does not exist', 'nope']),
    'folder_empty': (folder([]), FileNotFoundError, ['no image files']),
    'folder_only_non_images': (folder([('notes.txt', 'notimage'), ('labels.csv', 'notimage')]),
                               FileNotFoundError, ['no image files']),
    'folder_only_zero_byte_images': (folder([('a.png', 'zero'), ('b.jpg', 'zero')]),
                                     sources.TooManyBadRecordsError, ['could be decoded']),
    'folder_corrupt_and_truncated': (folder([('x/a.png', None), ('x/b.png', None),
                                                     ('x/c.jpg', 'text'), ('y/d.png', 'truncated'),
                                                     ('y/e.png', None)]),
                                     sources.TooManyBadRecordsError,
                                     ['unreadable', 'max_bad_fraction', 'c.jpg']),
    # -- workdir & checkpoints ------------------------------------------------------------------
    'workdir_is_file': (workdir_is_file, ValueError, ['exists and is not a directory']),
    'workdir_below_file': (workdir_below_file, ValueError, ['not a writable directory']),
    'workdir_unwritable': (workdir_readonly, ValueError, ['not a writable directory']),
    'checkpoint_of_other_model': (checkpoint_of_other_model, ckpt_lib.CheckpointMismatchError,
                                  ['different model', 'shape differences', '[3, 3, 3, 8] vs '
                                   '[3, 3, 3, 4]']),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_bad_input_gives_clear_error(name, tmp_path):
  mutate, error, words = CASES[name]
  c = tiny_config()
  workdir = mutate(c, tmp_path)
  workdir = workdir if isinstance(workdir, str) else str(tmp_path / 'run')
  with pytest.raises(error) as e:
    exp = loop.Experiment(c, workdir, helpers.mesh(8) if name[:4] != 'mesh' else None)
    exp.restore_or_init()  # only reached by the checkpoint cases (fails before compiling)
  msg = str(e.value)
  for w in words:
    assert w in msg, f'{name}: {w!r} not in {msg!r}'
  # The message comes from our code, not from deep inside JAX/Orbax.
  tb = e.tb
  while tb.tb_next is not None:
    tb = tb.tb_next
  assert f'{os.sep}ssl_jax{os.sep}' in tb.tb_frame.f_code.co_filename, name


def test_catalogue_has_at_least_25_kinds():
  assert len(CASES) >= 25


def test_unknown_config_variant():
  with pytest.raises(ValueError, match="unknown variant 'bultin'.*'builtin'"):
    simclr.get_config('bultin')


def test_every_shipped_config_is_valid():
  """The typo check must not fire on the fields that method configs legitimately add."""
  import glob  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  for path in sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py'))):
    name = os.path.basename(path)[:-3]
    if name.startswith('_'):
      continue
    module = importlib.import_module(f'configs.{name}')
    config = module.get_config('builtin')
    try:
      config_lib.validate(config)
    except ValueError as e:
      assert 'did you mean config.' not in str(e) and 'is not a known field' not in str(e), (
          name, str(e))


# -- the command line: one line, no traceback --------------------------------------------------
def _cli(args, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT,
             XLA_FLAGS=helpers.xla_flags(8))
  out = subprocess.run([sys.executable, '-m', 'ssl_jax.main'] + args, cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  lines = [l for l in (out.stdout + out.stderr).splitlines()
           if l.strip() and not re.match(r'[IWE]\d{4} ', l)]  # absl log lines aside
  return out.returncode, lines, out.stdout + out.stderr


@pytest.mark.parametrize('args,message', [
    (['--config.train.stepz=4'], "--config.train.stepz: unknown config field 'stepz' (did you "
                                 "mean 'steps'?)"),
    (['--config.trian.steps=4'], "unknown config field 'trian' (did you mean 'train'?)"),
    (['--config.train.steps=abc'], 'flag --config.train.steps=abc'),
    (['--config.data.batch_size=12'], 'ssl_jax: error: ValueError: config.data.batch_size: 12 is '
                                      'not divisible by the number of devices (8)'),
    (['--workdir=/sys/ssl_jax_run'], 'is not a writable directory'),
    (['--config.model.cpu_dots=eign'], "ssl_jax: error: ValueError: config.model.cpu_dots='eign' "
                                       "is not valid (did you mean 'eigen'?)"),
])
def test_command_line_prints_one_line(args, message, tmp_path):
  base = ['--config=configs/simclr.py:builtin', f'--workdir={tmp_path / "run"}',
          '--config.data.name=digits']
  rc, lines, text = _cli(base + args, tmp_path)
  assert rc != 0
  assert 'Traceback' not in text, text
  assert any(message in l for l in lines), text
  assert len(lines) <= 2, lines  # the error (+ absl's "Pass --helpshort" hint for flag errors)


def test_command_line_usage_errors(tmp_path):
  rc, lines, text = _cli(['--config=configs/simclr.py:builtin'], tmp_path)
  assert rc != 0 and '--workdir is required' in text and 'Traceback' not in text
  rc, lines, text = _cli(['--config=configs/nope.py', f'--workdir={tmp_path}'], tmp_path)
  assert rc != 0 and 'configs/nope.py' in text and 'Traceback' not in text
  rc, lines, text = _cli(['--config=configs/simclr.py:bultin', f'--workdir={tmp_path}'], tmp_path)
  assert rc != 0 and "unknown variant 'bultin'" in text and 'Traceback' not in text
  rc, lines, text = _cli(['--config=configs/simclr.py:builtin', f'--workdir={tmp_path}', 'extra'],
                         tmp_path)
  assert rc != 0 and "unexpected arguments: ['extra']" in text and 'Traceback' not in text
