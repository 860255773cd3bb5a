"""The folder recipe's rules (configs/_folder.py): image count / size / colour / budget -> the
chosen settings, and every flagship config's ``folder`` variant building a valid config."""
import glob
import importlib
import importlib.util
import os

import numpy as np
import pytest
from PIL import Image

from configs import _folder as folder
from ssl_jax import config as config_lib
from ssl_jax.data.folder import FolderStats, folder_stats
from ssl_jax.train import loop


def test_resolution_crop_and_blur_follow_image_size_and_budget():
  small = folder.choose(FolderStats(3000, 10, 32, True), minutes=10)
  assert (small.image_size, small.crop_scale, small.blur) == (32, (0.2, 1.0), False)
  big_short = folder.choose(FolderStats(3000, 10, 500, True), minutes=10)
  assert big_short.image_size == 32                      # a 10-min CPU budget caps at 32 px
  big_long = folder.choose(FolderStats(3000, 10, 500, True), minutes=600)
  assert (big_long.image_size, big_long.crop_scale, big_long.blur) == (224, (0.08, 1.0), True)
  mid = folder.choose(FolderStats(3000, 10, 77, True), minutes=60)
  assert (mid.image_size, mid.crop_scale) == (64, (0.14, 1.0))
  assert folder.choose(FolderStats(100, 2, 8, True)).image_size == 16   # never below 16 px


def test_batch_epochs_and_width_follow_image_count_and_budget():
  rows = [(1_000, 64, 200), (3_000, 128, 200), (20_000, 256, 100), (200_000, 256, 30)]
  for n, batch, epochs in rows:
    r = folder.choose(FolderStats(n, 10, 32, True), minutes=10)
    assert (r.batch_size, r.epochs) == (batch, epochs), n
  widths = [folder.choose(FolderStats(3000, 10, 32, True), m).width for m in (10, 60, 600)]
  assert widths == [16, 32, 64]
  blocks = [folder.choose(FolderStats(3000, 10, 32, True), m).stage_sizes for m in (10, 15, 16)]
  assert blocks == [(1, 1, 1, 1), (1, 1, 1, 1), ()]      # ResNet-10 for short budgets
  assert folder.choose(FolderStats(3000, 10, 32, True), 10).short_run
  assert not folder.choose(FolderStats(3000, 10, 32, True), 60).short_run


def test_colour_and_grey_augmentations():
  colour = folder.aug_overrides(folder.choose(FolderStats(3000, 10, 32, True)))
  assert colour['color_jitter']['saturation'] > 0 and colour['grayscale'] == 0.2
  assert colour['color_jitter']['hue'] == 0.5            # the whole hue circle
  assert colour['blur'] is None
  grey = folder.aug_overrides(folder.choose(FolderStats(3000, 10, 32, False)))
  assert grey['color_jitter']['saturation'] == grey['color_jitter']['hue'] == 0
  assert grey['grayscale'] is None
  assert folder.choose(FolderStats(3000, 10, 32, False)).flip == 0.5   # nothing assumes digits


def test_parse_arg():
  assert folder.parse_arg('folder,/d/x') == ('/d/x', folder.DEFAULT_MINUTES)
  assert folder.parse_arg('folder,gs://b/x,30') == ('gs://b/x', 30.0)
  for bad in ('folder', 'folder,', 'folder,/d,ten'):
    with pytest.raises(ValueError, match='folder,PATH'):
      folder.parse_arg(bad)


@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory):
  """train/{a,b}/ 24 colour 40x48 images + test/; and a grey flat folder."""
  root = tmp_path_factory.mktemp('own')
  rng = np.random.default_rng(0)
  for split, n in (('train', 12), ('test', 4)):
    for cls in ('a', 'b'):
      (root / split / cls).mkdir(parents=True)
      for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
            root / split / cls / f'{i}.png')
  grey = tmp_path_factory.mktemp('grey')
  for i in range(5):
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(grey / f'{i}.png')
  return str(root), str(grey)


def test_folder_stats(tiny_folder):
  root, grey = tiny_folder
  assert folder_stats(root) == FolderStats(24, 2, 40, True)
  assert folder_stats(grey) == FolderStats(5, 0, 20, False)


@pytest.mark.parametrize('method', ['simclr', 'moco', 'byol', 'dino', 'mae'])
def test_folder_variant_is_a_valid_config(method, tiny_folder, tmp_path, capsys):
  root, grey = tiny_folder
  c = importlib.import_module(f'configs.{method}').get_config(f'folder,{root},5')
  said = capsys.readouterr().err
  assert f'{method} folder recipe: 32 px' in said
  if method != 'mae':
    assert 'ResNet-10 width 16' in said and c.model.stage_sizes == (1, 1, 1, 1)
  if method == 'simclr':   # LARS lr 1.0 unscaled at the folder's batch 64 (measured)
    assert (c.optim.name, c.optim.lr, c.optim.lr_scaling) == ('lars', 1.0, 'none')
  assert (c.data.source, c.data.path, c.data.image_size, c.data.flip) == ('folder', root, 32, 0.5)   # capped
  assert c.train.epochs == 200 and c.train.budget_minutes == 5 and c.train.final_eval
  c.train.budget_minutes = 0                      # (timing a step is the run-length test's job)
  r = loop.resolve_run_length(c, str(tmp_path))
  assert r.train.steps == 75                      # 200 epochs x 24 images / batch 64
  config_lib.validate(r)
  unlabelled = importlib.import_module(f'configs.{method}').get_config(f'folder,{grey}')
  assert not unlabelled.train.final_eval and unlabelled.train.monitor_every > 0


def test_held_out_folders_are_reproducible(tmp_path, monkeypatch):
  """benchmarks/own_data.py: a folder is a function of (kind, seed), labelled train/ and test/."""
  spec = importlib.util.spec_from_file_location(
      'own_data', os.path.join(os.path.dirname(__file__), '..', 'benchmarks', 'own_data.py'))
  own = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(own)
  monkeypatch.setattr(own, 'TRAIN', 16)
  monkeypatch.setattr(own, 'TEST', 8)
  for kind in ('shapes', 'textures'):
    a = own.make_folder(kind, str(tmp_path / 'a'))
    b = own.make_folder(kind, str(tmp_path / 'b'))
    stats = folder_stats(a)
    assert (stats.num_images, stats.side, stats.colour) == (16, 32, True)
    assert 6 <= stats.num_classes <= 8             # 16 images over 8 balanced classes
    files = sorted(glob.glob(os.path.join(a, '*', '*', '*.png')))
    assert len(files) == 24
    for f in files[::5]:
      np.testing.assert_array_equal(np.asarray(Image.open(f)),
                                    np.asarray(Image.open(f.replace(a, b))))
  first = lambda root: np.asarray(Image.open(sorted(glob.glob(f'{root}/train/*/*.png'))[0]))
  seed0 = own.make_folder('shapes', str(tmp_path / 'a'))
  seed1 = own.make_folder('shapes', str(tmp_path / 'a'), seed=1)
  assert seed0 != seed1 and not np.array_equal(first(seed0), first(seed1))
