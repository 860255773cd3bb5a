"""The audio modality's host side: clip transform, eval view, .wav folders, modality checks."""
from __future__ import annotations

import wave

import numpy as np
import pytest

from ssl_jax import config as config_lib
from ssl_jax.data import audio, folder, modality, pipeline, sources


def _record(n, label=3):
  return {'audio': np.arange(n, dtype=np.float32), 'label': np.int32(label), 'index': np.int64(7)}


def test_clip_crops_long_and_pads_short_waveforms():
  t = audio.AudioClip(10)
  rng = np.random.default_rng(0)
  starts = set()
  for _ in range(50):
    out = t.random_map(_record(25), rng)
    assert out['audio'].shape == (10,) and out['audio'].dtype == np.float32
    start = int(out['audio'][0])
    np.testing.assert_array_equal(out['audio'], np.arange(start, start + 10))   # one window
    starts.add(start)
  assert min(starts) >= 0 and max(starts) <= 15 and len(starts) > 5   # uniform over 0..15
  short = t.random_map(_record(4), rng)['audio']
  np.testing.assert_array_equal(short, [0, 1, 2, 3, 0, 0, 0, 0, 0, 0])
  assert out['label'] == 3 and out['index'] == 7


def test_eval_view_is_the_centre_window():
  t = audio.AudioClip(10)
  np.testing.assert_array_equal(t.eval_view(_record(30)), np.arange(10, 20))
  np.testing.assert_array_equal(t.eval_view(_record(10)), np.arange(10))


def test_batch_spec_matches_a_real_batch():
  class Src:
    num_classes = 2
    def __len__(self):
      return 6
    def __getitem__(self, i):
      return _record(20 + i, label=i % 2) | {'index': np.int64(i)}
  t = audio.AudioClip(16)
  ds = pipeline.train_dataset(Src(), t, global_batch=4, seed=0)
  batch = ds[0]
  spec = t.batch_spec(4)
  assert set(batch) == set(spec)
  for k, (shape, dtype) in spec.items():
    assert np.shape(batch[k]) == shape and np.asarray(batch[k]).dtype == np.dtype(dtype), k
  # every batch is a pure function of (seed, step)
  np.testing.assert_array_equal(ds[3]['audio'],
                                pipeline.train_dataset(Src(), t, global_batch=4, seed=0)[3]['audio'])


def test_standardize_gives_zero_mean_unit_variance():
  x = np.random.default_rng(0).normal(3.0, 5.0, (2, 1000)).astype(np.float32)
  y = audio.standardize(x)
  np.testing.assert_allclose(y.mean(-1), 0, atol=1e-4)
  np.testing.assert_allclose(y.std(-1), 1, atol=1e-3)


def _write_wav(path, samples, rate, width=2, channels=1):
  dt = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
  if width == 1:
    data = np.round(samples * 127 + 128).astype(dt)
  else:
    data = np.round(samples * (np.iinfo(dt).max)).astype(dt)
  if channels > 1:
    data = np.repeat(data[:, None], channels, axis=1)
  with wave.open(str(path), 'wb') as w:
    w.setnchannels(channels)
    w.setsampwidth(width)
    w.setframerate(rate)
    w.writeframes(data.tobytes())


@pytest.mark.parametrize('width,channels', [(2, 1), (1, 1), (4, 2), (2, 2)])
def test_decode_wav_formats(tmp_path, width, channels):
  t = np.arange(1600) / 16000
  x = 0.5 * np.sin(2 * np.pi * 440 * t)
  _write_wav(tmp_path / 'a.wav', x, 16000, width, channels)
  y = folder.decode_wav(str(tmp_path / 'a.wav'))
  assert y.shape == (1600,) and y.dtype == np.float32
  np.testing.assert_allclose(y, x, atol=2.0 / 127 if width == 1 else 1e-3)


def test_decode_wav_resamples_to_16k(tmp_path):
  t = np.arange(8000) / 8000
  _write_wav(tmp_path / 'a.wav', 0.5 * np.sin(2 * np.pi * 300 * t), 8000)
  y = folder.decode_wav(str(tmp_path / 'a.wav'))
  assert y.shape == (16000,)
  spectrum = np.abs(np.fft.rfft(y))
  assert abs(np.argmax(spectrum) * 16000 / len(y) - 300) < 2   # same tone at the new rate


def test_audio_folder_source_through_get_source(tmp_path):
  for split, n in (('train', 3), ('test', 2)):
    for cls in ('yes', 'no'):
      d = tmp_path / split / cls
      d.mkdir(parents=True)
      for i in range(n):
        _write_wav(d / f'{i}.wav', np.full(800 + 100 * i, 0.25 if cls == 'yes' else -0.25), 16000)
  (tmp_path / 'train' / 'yes' / 'bad.wav').write_bytes(b'not a wav')
  c = config_lib.base_config()
  c.data.modality, c.data.source, c.data.path = 'audio', 'folder', str(tmp_path)
  c.data.max_bad_fraction = 0.5
  src = sources.get_source(c.data, 'train')
  assert len(src) == 7 and src.num_classes == 2
  rec = src[0]
  assert rec['audio'].dtype == np.float32 and rec['label'] == 0   # 'no' sorts first
  np.testing.assert_allclose(rec['audio'], -0.25, atol=1e-4)
  assert src[5]['label'] == 1
  src[6]   # bad.wav: replaced by the next readable record, counted
  assert len(src.bad_indices) == 1
  (tmp_path / 'empty' / 'train').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=r'no audio files \(.wav\)'):
    folder.AudioFolderSource(str(tmp_path / 'empty'), 'train')


def test_modality_names_are_checked():
  modality.check('audio')
  with pytest.raises(ValueError, match=r"config.data.modality='video' is not a supported"):
    modality.check('video')
  c = config_lib.base_config()
  c.data.modality = 'text'
  with pytest.raises(ValueError, match='data.modality'):
    config_lib.validate(c)
  c.data.modality, c.data.source, c.data.name = 'audio', 'tfds', 'x'
  with pytest.raises(ValueError, match="data.source.*'tfds'.*folder of .wav"):
    config_lib.validate(c)


def test_eval_view_follows_data_modality():
  c = config_lib.base_config()
  assert modality.eval_view(c.data) is None          # images: the pipeline's centre crop
  c.data.modality, c.data.clip_samples = 'audio', 8
  view = modality.eval_view(c.data)
  np.testing.assert_array_equal(view(_record(12)), np.arange(2, 10))
