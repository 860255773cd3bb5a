"""Spoken-word sets synthesised by espeak-ng (ssl_jax/data/speech.py): arrays and labels, disjoint
speakers, the cache, reproducibility across fresh processes, MFCC against a direct computation.

Tiny configs (2-3 speakers) in a temporary cache: each generation is one ~1-2 s subprocess."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from ssl_jax.data import speech

TINY = speech.SpeechSetConfig(name='spoken_digits', num_train_speakers=3, num_test_speakers=2)
CLEAN = speech.SpeechSetConfig(name='spoken_digits', num_train_speakers=3, num_test_speakers=2,
                               hard=False)


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp('speech_cache'))


@pytest.fixture(scope='module')
def tiny(cache):
  return {split: speech.load_speech_set('spoken_digits', split, config=TINY, cache_dir=cache)
          for split in ('train', 'test')}


def test_shapes_dtypes_and_labels(tiny):
  for split, n_speakers in (('train', 3), ('test', 2)):
    d = tiny[split]
    n = 10 * n_speakers
    assert d['audio'].shape == (n, 16000) and d['audio'].dtype == np.float32
    assert d['label'].shape == (n,) and d['label'].dtype == np.int32
    assert d['speaker'].shape == (n,) and d['speaker'].dtype == np.int32
    assert d['phones'].shape == (n, 49) and d['phones'].dtype == np.int16
    assert speech.num_frames(16000) == 49 == (16000 - 400) // 320 + 1
    assert d['words'] == speech.DIGITS and d['phone_names'][0] == 'sil'
    assert d['phones'].max() < len(d['phone_names'])
    assert np.abs(d['audio']).max() <= 1.0
    # Every speaker says every word once; the random gain puts each clip's peak in -26..-1 dBFS.
    assert np.array_equal(np.bincount(d['label']), np.full(10, n_speakers))
    peaks = np.abs(d['audio']).max(axis=1)
    assert peaks.min() >= 10 ** (-26 / 20) - 1e-4 and peaks.max() <= 10 ** (-1 / 20) + 1e-4


def test_speakers_disjoint_between_splits(tiny):
  assert not set(tiny['train']['speaker']) & set(tiny['test']['speaker'])
  # Not only the ids: no (accent, variant) voice is drawn twice.
  voices = [(s['accent'], s['variant']) for s in speech.draw_speakers(200, seed=0)]
  assert len(set(voices)) == 200


def test_cache_is_reused_and_keyed_by_config(tiny, cache, monkeypatch):
  path = speech.cache_path(TINY, cache)
  assert os.path.exists(path) and not [f for f in os.listdir(cache) if '.tmp-' in f]

  def no_generation(config, path):
    raise AssertionError(f'generated {config} again')

  monkeypatch.setattr(speech, 'generate_in_subprocess', no_generation)
  again = speech.load_speech_set('spoken_digits', 'train', config=TINY, cache_dir=cache)
  assert np.array_equal(again['audio'], tiny['train']['audio'])
  other_seed = speech.SpeechSetConfig(**{**TINY.__dict__, 'seed': 1})
  assert speech.cache_path(other_seed, cache) != path
  with pytest.raises(AssertionError, match='generated'):
    speech.load_speech_set('spoken_digits', 'train', config=other_seed, cache_dir=cache)


def test_fresh_processes_generate_identical_sets(tiny, tmp_path):
  for split in ('train', 'test'):
    d = speech.load_speech_set('spoken_digits', split, config=TINY, cache_dir=str(tmp_path))
    for key in ('audio', 'label', 'speaker', 'phones'):
      assert np.array_equal(d[key], tiny[split][key]), (split, key)
    assert d['phone_names'] == tiny[split]['phone_names']


def test_phone_labels_follow_the_word(cache):
  d = speech.load_speech_set('spoken_digits', 'train', config=CLEAN, cache_dir=cache)
  phones, audio = d['phones'], d['audio']
  assert len(np.unique(phones)) > 10      # the ten digits use more than ten phones
  for i in range(len(audio)):
    # Clean clips: the word is centred and everything outside it is exactly zero, so every frame
    # whose window lies outside the first..last non-zero sample is silence, and the centre frame
    # is inside the word.
    nz = np.flatnonzero(audio[i])
    outside = (np.arange(49) * 320 + 400 <= nz[0]) | (np.arange(49) * 320 >= nz[-1] + 1)
    assert outside[0] and outside[-1], i   # no digit fills 1 s at these rates
    assert np.all(phones[i][outside] == 0), i
    assert phones[i][24] != 0, i
    assert len(np.unique(phones[i][phones[i] != 0])) >= 2, i
  # "six": s I k s -- the phones of one clip spell the word, in order.
  names = d['phone_names']
  six = phones[d['label'] == 6][0]
  runs = [names[p] for j, p in enumerate(six) if p and (j == 0 or six[j - 1] != p)]
  assert runs == ['s', 'I', 'k', 's']


def test_hard_clips_keep_the_primary_words_labels(tiny, cache):
  # Same seed, same speakers, same utterances: a hard clip's labels are its clean clip's labels
  # moved to another offset (the competing talker is not labelled). The frame sampling of the
  # move can gain or lose one frame at either end.
  clean = speech.load_speech_set('spoken_digits', 'train', config=CLEAN, cache_dir=cache)
  assert np.array_equal(clean['label'], tiny['train']['label'])
  moved = 0
  for hard, ref in zip(tiny['train']['phones'], clean['phones']):
    h, r = np.flatnonzero(hard), np.flatnonzero(ref)
    assert len(h) == h[-1] - h[0] + 1 and len(r) == r[-1] - r[0] + 1   # one run each
    assert abs(len(h) - len(r)) <= 1
    assert set(hard[h]) <= set(ref[r])
    moved += h[0] != r[0]
  assert moved >= 20       # of 30 clips: the placement is random, the clean clip centred


def test_source_records(tiny, cache):
  src = speech.speech_source('spoken_digits', 'test', config=TINY, cache_dir=cache)
  assert len(src) == 20 and src.num_classes == 10 and src.name == 'spoken_digits:test'
  rec = src[3]
  assert set(rec) == {'audio', 'label', 'index'}
  assert rec['audio'].shape == (16000,) and rec['audio'].dtype == np.float32
  assert isinstance(rec['label'], np.int32) and isinstance(rec['index'], np.int64)
  assert rec['label'] == tiny['test']['label'][3] and rec['index'] == 3
  assert np.array_equal(rec['audio'], tiny['test']['audio'][3])
  assert repr(src) == 'AudioArraySource(spoken_digits:test, n=20, samples=16000)'


def test_unknown_names_fail_with_one_line():
  with pytest.raises(ValueError, match=r"^config.data.name='x' is not a speech set; choose one "
                     r"of \['spoken_digits', 'spoken_words'\]$"):
    speech.load_speech_set('x', 'train')
  with pytest.raises(ValueError, match="split 'val'"):
    speech.load_speech_set('spoken_words', 'val')


def _direct_mfcc_frame(x, t):
  """One frame's 13 MFCCs written out the long way (loops and the textbook formulas)."""
  f = np.asarray(x[320 * t:320 * t + 400], np.float64)
  f = f - f.mean()
  f = np.array([f[0] - 0.97 * f[0]] + [f[n] - 0.97 * f[n - 1] for n in range(1, 400)])
  f = f * np.array([0.54 - 0.46 * np.cos(2 * np.pi * n / 399) for n in range(400)])
  power = np.abs(np.fft.fft(f, 512)[:257]) ** 2
  mel = lambda hz: 1127 * np.log(1 + hz / 700)
  edges = np.linspace(mel(20), mel(8000), 42)
  logmel = []
  for m in range(40):
    e = 0.0
    for k in range(257):
      b = mel(k * 16000 / 512)
      if edges[m] < b < edges[m + 2]:
        w = (b - edges[m]) / (edges[m + 1] - edges[m]) if b <= edges[m + 1] else \
            (edges[m + 2] - b) / (edges[m + 2] - edges[m + 1])
        e += w * power[k]
    logmel.append(np.log(e))
  return np.array([np.sqrt((1 if k == 0 else 2) / 40) *
                   sum(logmel[n] * np.cos(np.pi * k * (n + 0.5) / 40) for n in range(40))
                   for k in range(13)])


def test_mfcc_matches_a_direct_computation():
  rng = np.random.default_rng(0)
  x = rng.standard_normal(16000) * 0.1
  ceps = speech.mfcc(x, deltas=False)
  assert ceps.shape == (49, 13) and ceps.dtype == np.float32
  for t in (0, 17, 48):
    np.testing.assert_allclose(ceps[t], _direct_mfcc_frame(x, t), rtol=1e-4, atol=1e-3)
  full = speech.mfcc(np.stack([x, x[::-1]]))
  assert full.shape == (2, 49, 39)
  np.testing.assert_allclose(full[0, :, :13], ceps, rtol=1e-6)


def test_mfcc_sine_lands_in_its_mel_filter_and_deltas_are_slopes():
  t = np.arange(16000) / 16000
  logmel = speech.log_mel(np.sin(2 * np.pi * 1000 * t))
  edges = speech.mel_to_hz(np.linspace(speech.hz_to_mel(20), speech.hz_to_mel(8000), 42))
  nearest = int(np.argmin(np.abs(edges[1:-1] - 1000)))      # centre 1008 Hz
  assert np.all(np.argmax(logmel, axis=-1) == nearest)
  # Deltas of a ramp: slope 1 inside; with the edge frames repeated, frame 0 gets
  # (1 * (1 - 0) + 2 * (2 - 0)) / 10 = 0.5 and frame 1 (1 * (2 - 0) + 2 * (3 - 0)) / 10 = 0.8.
  d = speech.compute_deltas(np.arange(6.0)[:, None])[:, 0]
  np.testing.assert_allclose(d, [0.5, 0.8, 1, 1, 0.8, 0.5])


def _synth_digest_in_fresh_process(voice):
  code = ('import hashlib; from ssl_jax.data import speech; '
          f'w, ev = speech.Espeak().synth("seven", {voice!r}, 175, 50, 50, rand_seed=7); '
          'print(hashlib.sha256(w.tobytes()).hexdigest(), len(ev))')
  return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        check=True).stdout.split()


def test_espeak_noise_is_seeded():
  # The breathy variants draw noise that espeak-ng seeds from the clock unless
  # espeak_ng_SetRandSeed is called: without it two fresh processes differ.
  for voice in ('en-US+sandro', 'en+whisper'):
    digest, n_phones = _synth_digest_in_fresh_process(voice)
    assert [digest, n_phones] == _synth_digest_in_fresh_process(voice)
    assert int(n_phones) == 7        # s E v @ n, then the pauses _: and _
