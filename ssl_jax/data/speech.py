"""Offline spoken-word sets for speech SSL evaluation (wav2vec 2.0 / HuBERT / data2vec-audio),
synthesised by espeak-ng through ctypes and made hard by simulated rooms, channels and talkers.

Sets (``SPEECH_SETS``): ``spoken_digits`` (zero..nine, 10 classes) and ``spoken_words`` (the 35
words of Google Speech Commands v2). ``load_speech_set(name, split)`` returns the arrays,
``speech_source(name, split)`` a random-access source like ``sources.ArraySource``, and ``mfcc``
the baseline features.

Why synthesis: no download at run time. espeak-ng's library and voice data ship in the pip package
``espeakng-loader`` (``requirements.txt``), and espeak-ng's phoneme events give exact phone
boundaries, so every clip comes with frame-level phone labels for free (for phone probing / the
HuBERT-style cluster-purity checks) besides its word label.

Speakers. A speaker (``speaker`` id i is ``draw_speakers(num_train_speakers + num_test_speakers,
seed)[i]``) is (accent, variant, rate, pitch, pitch range): one of espeak-ng's 8 English
accents (``ACCENTS``: en, en-US, en-US-nyc, en-GB-scotland, en-GB-x-rp, en-GB-x-gbclan,
en-GB-x-gbcwmd, en-029), one of 68 voice variants from ``espeak-ng-data/voices/!v`` (``VARIANTS``:
male/female/whisper/croak/klatt and the named ones; the echo-drenched robot voices are left out),
speaking rate U(110, 260) words/min, pitch U(15, 85) and pitch range U(10, 90) (espeak's 0-100
scales). The (accent, variant) pairs are drawn without replacement from the 544-pair grid with a
seeded numpy Generator, so no voice is shared between train and test: test speakers are unseen
speakers. Every speaker says every word once. espeak's other languages reading the English words
(de, nl, af) were tried and left out: they read the spelling ("nine" -> /ni:n@/), which is a
different word, not an accent.

Hard variant (``hard=True``, the default). Each utterance is resampled 22050 -> 16000 Hz
(``scipy.signal.resample_poly``, 320/441), cut to its phones (first phone onset to last phone
offset) and, with a Generator seeded by (seed, split, speaker, word), rendered as:

1. placed at a random offset inside the ``clip_samples`` clip (words longer than the clip are
   cropped at a random start);
2. a different word by another speaker of the same split added at -6 to -15 dB (RMS, relative
   to the primary word) at its own random offset -- a competing talker, so "what word" must be
   read from the louder one;
3. the mixture convolved with one room impulse response: direct path plus exponentially decaying
   Gaussian noise, RT60 U(0.1, 0.6) s, direct-to-reverberant ratio U(0, 10) dB;
4. a zero-phase 4th-order Butterworth low-pass at U(2, 6) kHz (band-limited channels; zero phase
   keeps the phone labels aligned);
5. white, pink or brown noise at an SNR of U(5, 20) dB against the word's span;
6. a random gain: the peak is set to a log-uniform level between -26 and -1 dBFS.

Steps 2-5 are each applied with probability ``AUGMENT_PROB`` = 0.5, independently; 1 and 6 always.
Why not all four on every clip: that measured MFCC kNN 0.165 on spoken_words and 0.340 on digits
(seed 0), and a set where every clip has a competing talker, a room, a narrow channel and noise
grades nothing -- with each on half the clips, difficulty ranges from a clean word (1 clip in 16)
to all four, so a representation's robustness shows as a number between the two. MFCC kNN
(words / digits) against the probability: 0.3: 0.345 / 0.540; 0.4: 0.293 / 0.443; 0.5: 0.238 /
0.403; 0.65: 0.208 / 0.390; 1.0: 0.165 / 0.340. The competing talker costs most: without it (the
other three always on) words measured 0.310; placement and gain alone 0.710; the clean centred
set 0.858.

Labels. ``phones[i, t]`` is the phone id at the centre of frame t, where frame t covers samples
[320 t, 320 t + 400) -- the 49 frames (20 ms hop, 25 ms receptive field) that the wav2vec 2.0 conv
encoder gives for 16,000 samples: ``num_frames = (clip_samples - 400) // 320 + 1``. Phones are
espeak-ng's phoneme mnemonics with the stress marks removed (so 'E and E are one phone); espeak's
pauses (``_``, ``_:``, ...) and everything outside the word are 0 = ``'sil'``. The inventory
(``phone_names``) is the sorted set of phones that occur in the generated set; different accents
use different vowels, which is accent information the labels keep.

Reproducibility and the cache. espeak-ng is not reproducible within one process: it keeps state
between utterances, so saying "seven" again comes out ~20 samples longer. Across fresh processes
it is reproducible only once its noise generator (breath, whisper: the ``sandro``, ``whisper``, ...
variants) is seeded, which it otherwise does from the clock: 142 of 1,000 spoken_digits train clips
differed between two fresh processes before ``espeak_ng_SetRandSeed`` was called per utterance
(seed from (seed, speaker, word)); with it, two fresh generations of both default sets are
identical, array for array. So a set is generated once, in a fresh ``python -m
ssl_jax.data.speech --generate`` subprocess that synthesises every utterance in a fixed order
(speaker-major), and cached as a compressed ``.npz`` named by a hash of the config, the word list,
the voices, the rendering ranges, ``GENERATOR_VERSION`` and espeakng-loader's version, in
``cache_dir`` (default ``$SSL_JAX_CACHE`` or ``~/.cache/ssl_jax/speech``). The file is written to
a temporary name and renamed, so a reader never sees half a file; later loads read the cache.

Measured (2-core Xeon, defaults: 100 train / 30 test speakers, hard, seed 0):

* ``spoken_words``: 3,500 train / 1,050 test clips of 1.0 s; generated in 20 s (26 s for the
  call, subprocess start and compressed write included); cache 91 MB; loading the train split
  from it 4.5 s; its MFCC 3 s.
* ``spoken_digits``: 1,000 train / 300 test clips; generated in 4.8 s (6.1 s call); cache 26 MB.
* Words last 6-46 frames (0.12-0.92 s, mean 0.37 s), so none is cropped at the defaults; 49
  phones in spoken_words' inventory (with 'sil'), 26 in spoken_digits'.
* MFCC baseline (39-d MFCC + deltas, mean and std over the 49 frames -> 78-d, standardised with
  the train statistics), weighted cosine kNN k=20, T=0.07 (``ssl_jax.eval.knn``, the protocol the
  SSL evaluations use), train -> test top-1: spoken_words 0.238 (chance 0.029), spoken_digits
  0.403 (chance 0.1); seeds 1 and 2: 0.237 / 0.423 and 0.228 / 0.423. sklearn's majority-vote
  ``KNeighborsClassifier(20, metric='cosine')`` on the same features: 0.229 / 0.420 (seed 0). The
  clean sets (``hard=False``): 0.858 / 0.963.
  Command: ``python -m ssl_jax.eval.speech --measure spoken_words spoken_digits`` (prints sizes,
  generation time, cache size and the kNN top-1 of the hard and clean set of each, seed 0; ~2 min
  with an empty cache).

MFCC (``mfcc``) follows HuBERT's first-iteration features (fairseq's ``dump_mfcc_feature.py``:
torchaudio's Kaldi MFCC, 13 coefficients, + deltas + delta-deltas = 39) with three departures: a
20 ms hop instead of Kaldi's 10 ms, so that frame t is exactly the conv encoder's frame t and
frame-level labels line up; a Hamming window instead of Kaldi's Povey window; no cepstral
liftering (a per-coefficient scale, which the usual standardisation undoes). Per 25 ms frame: DC removal, pre-emphasis 0.97, Hamming window, 512-point
power spectrum, 40 triangular mel filters (HTK mel, 20 Hz to Nyquist), log, orthonormal DCT-II;
deltas over +-2 frames (torchaudio's ``compute_deltas``, window 5, edge frames repeated).
"""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

SPEECH_SETS = ('spoken_digits', 'spoken_words')

DIGITS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
# Google Speech Commands v2 (Warden 2018), its 35 words in its own order.
WORDS = ('backward', 'bed', 'bird', 'cat', 'dog', 'down', 'eight', 'five', 'follow', 'forward',
         'four', 'go', 'happy', 'house', 'learn', 'left', 'marvin', 'nine', 'no', 'off', 'on',
         'one', 'right', 'seven', 'sheila', 'six', 'stop', 'three', 'tree', 'two', 'up', 'visual',
         'wow', 'yes', 'zero')
VOCABULARY = {'spoken_digits': DIGITS, 'spoken_words': WORDS}

ACCENTS = ('en', 'en-US', 'en-US-nyc', 'en-GB-scotland', 'en-GB-x-rp', 'en-GB-x-gbclan',
           'en-GB-x-gbcwmd', 'en-029')
VARIANTS = ('m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8', 'f1', 'f2', 'f3', 'f4', 'f5', 'croak',
            'whisper', 'whisperf', 'klatt', 'klatt2', 'klatt3', 'klatt4', 'Alex', 'Andrea',
            'Andy', 'Annie', 'Denis', 'Diogo', 'Gene', 'Henrique', 'Hugo', 'Jacky', 'Lee',
            'Mario', 'Michael', 'Mike', 'Nguyen', 'Storm', 'adam', 'anika', 'antonio', 'aunty',
            'belinda', 'benjamin', 'boris', 'caleb', 'david', 'ed', 'edward', 'grandma',
            'grandpa', 'gustave', 'iven', 'kaukovalta', 'linda', 'marcelo', 'max', 'michel',
            'miguel', 'paul', 'pedro', 'quincy', 'rob', 'robert', 'sandro', 'shelby', 'steph',
            'travis', 'victor', 'zac')
RATE = (110, 260)          # words per minute (espeak default 175)
PITCH = (15, 85)           # espeak 0-100, default 50
PITCH_RANGE = (10, 90)     # espeak 0-100, default 50

# Hard-variant ranges (see the module docstring).
INTERFERER_DB = (-15.0, -6.0)
RT60_S = (0.1, 0.6)
DRR_DB = (0.0, 10.0)
LOWPASS_HZ = (2000.0, 6000.0)
SNR_DB = (5.0, 20.0)
PEAK_DBFS = (-26.0, -1.0)
NOISE_COLOURS = ('white', 'pink', 'brown')
AUGMENT_PROB = 0.5

# Bump when the generated arrays change for the same config (it is part of the cache key).
GENERATOR_VERSION = 1
SILENCE = 'sil'


@dataclasses.dataclass(frozen=True)
class SpeechSetConfig:
  """What a generated set is a pure function of (with ``GENERATOR_VERSION`` and espeak-ng's data).

  Defaults: 100 train / 30 test speakers, 1 s clips at 16 kHz, hard. Tests use 2-3 speakers.
  """
  name: str = 'spoken_words'
  num_train_speakers: int = 100
  num_test_speakers: int = 30
  clip_samples: int = 16000
  sample_rate: int = 16000
  hard: bool = True
  seed: int = 0


def check_name(name: str) -> None:
  if name not in SPEECH_SETS:
    raise ValueError(f'config.data.name={name!r} is not a speech set; choose one of '
                     f'{list(SPEECH_SETS)}')


def frame_geometry(sample_rate: int = 16000) -> tuple[int, int]:
  """(hop, window) in samples of the 50 Hz frames: (320, 400) at 16 kHz, the wav2vec 2.0 conv
  encoder's stride and receptive field."""
  return sample_rate // 50, sample_rate * 25 // 1000


def num_frames(clip_samples: int, sample_rate: int = 16000) -> int:
  hop, win = frame_geometry(sample_rate)
  return (clip_samples - win) // hop + 1


# ------------------------------------------------------------------------------------------------
# espeak-ng through ctypes (speak_lib.h, API revision 12).
# ------------------------------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM = {'rate': 1, 'volume': 2, 'pitch': 3, 'range': 4}


class _EventId(ctypes.Union):
  _fields_ = [('number', ctypes.c_int), ('name', ctypes.c_char_p), ('string', ctypes.c_char * 8)]


class _Event(ctypes.Structure):
  """``espeak_EVENT``; ``sample`` is the event's position in samples of the output."""
  _fields_ = [('type', ctypes.c_int), ('unique_identifier', ctypes.c_uint),
              ('text_position', ctypes.c_int), ('length', ctypes.c_int),
              ('audio_position', ctypes.c_int), ('sample', ctypes.c_int),
              ('user_data', ctypes.c_void_p), ('id', _EventId)]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_Event))


class Espeak:
  """The espeak-ng library of ``espeakng_loader``, initialised for synchronous retrieval with
  phoneme events. One per process: espeak-ng is a process-wide singleton."""

  def __init__(self):
    import espeakng_loader  # pylint: disable=g-import-not-at-top
    self.data_path = espeakng_loader.get_data_path()
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    self.sample_rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(),
        _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
    if self.sample_rate <= 0:
      raise RuntimeError(f'espeak_Initialize failed ({self.sample_rate}) with data at '
                         f'{self.data_path}')
    self._lib = lib
    self._chunks: list[np.ndarray] = []
    self._phones: list[tuple[int, str]] = []
    self._callback = _SynthCallback(self._collect)   # kept alive: espeak holds the pointer
    lib.espeak_SetSynthCallback(self._callback)

  def _collect(self, wav, num_samples, events) -> int:
    if wav and num_samples > 0:
      self._chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
      if events[i].type == _EVENT_PHONEME:
        self._phones.append((events[i].sample, events[i].id.string.decode('utf-8', 'replace')))
      i += 1
    return 0   # continue

  def has_variant(self, variant: str) -> bool:
    # espeak_SetVoiceByName silently ignores an unknown '+variant', so check the file.
    return os.path.exists(os.path.join(self.data_path, 'voices', '!v', variant))

  def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int,
            rand_seed: int = 1):
    """(int16 samples at ``self.sample_rate``, [(onset sample, phoneme mnemonic), ...]).

    ``rand_seed`` seeds espeak-ng's noise generator (breath, whisper, aspiration), which it
    otherwise seeds from the clock."""
    if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
      raise ValueError(f'espeak-ng has no voice {voice!r}')
    for key, value in (('rate', rate), ('pitch', pitch), ('range', pitch_range), ('volume', 100)):
      self._lib.espeak_SetParameter(_PARAM[key], int(value), 0)
    self._lib.espeak_ng_SetRandSeed(int(rand_seed))
    self._chunks, self._phones = [], []
    buf = text.encode() + b'\0'
    err = self._lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    if err != 0:
      raise RuntimeError(f'espeak_Synth({text!r}, voice={voice!r}) returned {err}')
    wave = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
    return wave, list(self._phones)


# ------------------------------------------------------------------------------------------------
# Speakers and clean utterances.
# ------------------------------------------------------------------------------------------------

def draw_speakers(num: int, seed: int) -> list[dict]:
  """``num`` speakers with distinct (accent, variant) pairs; the first ``num_train_speakers`` are
  the train split's, the rest the test split's, so no voice is in both. Speaker i depends on
  (seed, i) only, not on ``num``."""
  grid = [(a, v) for a in ACCENTS for v in VARIANTS]
  if num > len(grid):
    raise ValueError(f'{num} speakers asked for; there are {len(grid)} (accent, variant) pairs')
  pairs = np.random.default_rng([seed, 0]).permutation(len(grid))[:num]
  out = []
  for i, p in enumerate(pairs):
    rng = np.random.default_rng([seed, 2, i])
    rate, pitch, pitch_range = (int(round(rng.uniform(*r))) for r in (RATE, PITCH, PITCH_RANGE))
    out.append({'accent': grid[p][0], 'variant': grid[p][1], 'rate': rate, 'pitch': pitch,
                'range': pitch_range})
  return out


def base_phone(mnemonic: str) -> str:
  """espeak's phoneme mnemonic without stress marks; '' for a pause."""
  name = mnemonic.replace("'", '').replace(',', '').strip()
  return '' if name.startswith('_') else name


def phone_segments(events: list[tuple[int, str]], length: int) -> list[tuple[int, int, str]]:
  """[(start, end, phone)] of the non-pause phones: each phoneme event lasts to the next one."""
  bounds = [s for s, _ in events[1:]] + [length]
  return [(s, min(e, length), base_phone(m)) for (s, m), e in zip(events, bounds)
          if base_phone(m) and e > s]


def clean_utterance(wave: np.ndarray, events, source_rate: int, sample_rate: int):
  """espeak's output -> (float64 word at ``sample_rate`` cut to its phones, [(start, end, phone)]
  relative to the cut)."""
  from scipy import signal  # pylint: disable=g-import-not-at-top
  g = np.gcd(sample_rate, source_rate)
  up, down = sample_rate // g, source_rate // g
  x = signal.resample_poly(wave.astype(np.float64) / 32768.0, up, down)
  segs = [(int(round(s * up / down)), int(round(e * up / down)), p)
          for s, e, p in phone_segments(events, len(wave))]
  segs = [(s, min(e, len(x)), p) for s, e, p in segs if min(e, len(x)) > s]
  if not segs:
    raise RuntimeError('espeak-ng gave no phoneme events')
  start, end = segs[0][0], segs[-1][1]
  return x[start:end], [(s - start, e - start, p) for s, e, p in segs]


def synthesize_all(words, speakers, sample_rate: int, seed: int = 0):
  """utterances[s][w] = clean_utterance of speaker s saying word w, in one fixed order (speaker
  major) and with espeak-ng's noise generator seeded from (seed, s, w): what makes its output
  reproducible in a fresh process."""
  engine = Espeak()
  for v in sorted({s['variant'] for s in speakers}):
    if not engine.has_variant(v):
      raise ValueError(f'espeak-ng data has no voice variant {v!r}')
  out = []
  for s, sp in enumerate(speakers):
    voice = f"{sp['accent']}+{sp['variant']}"
    row = []
    for w, word in enumerate(words):
      rand_seed = (seed * 1_000_003 + s * 1_009 + w) % 2 ** 31 + 1
      wave, events = engine.synth(word, voice, sp['rate'], sp['pitch'], sp['range'], rand_seed)
      row.append(clean_utterance(wave, events, engine.sample_rate, sample_rate))
    out.append(row)
  return out


# ------------------------------------------------------------------------------------------------
# Rendering a clip (pure functions of their inputs and an explicit Generator).
# ------------------------------------------------------------------------------------------------

def phone_track(length: int, segments, phone_ids: dict) -> np.ndarray:
  """Per-sample phone ids (int16, 0 = silence) of a word of ``length`` samples."""
  track = np.zeros(length, np.int16)
  for s, e, p in segments:
    track[s:e] = phone_ids[p]
  return track


def place(x: np.ndarray, clip_samples: int, offset: int) -> np.ndarray:
  """``x`` written into zeros(clip_samples) at ``offset`` (negative: ``x`` starts before the clip;
  what falls outside is dropped)."""
  out = np.zeros(clip_samples, x.dtype)
  lo, hi = max(offset, 0), min(offset + len(x), clip_samples)
  if hi > lo:
    out[lo:hi] = x[lo - offset:hi - offset]
  return out


def random_offset(length: int, clip_samples: int, rng: np.random.Generator) -> int:
  """Uniform placement inside the clip; a word longer than the clip is cropped at a uniform
  start."""
  if length <= clip_samples:
    return int(rng.integers(0, clip_samples - length + 1))
  return -int(rng.integers(0, length - clip_samples + 1))


def room_impulse(rt60: float, drr_db: float, sample_rate: int,
                 rng: np.random.Generator) -> np.ndarray:
  """Direct path (1 at t=0) plus Gaussian noise decaying by 60 dB in ``rt60`` s, scaled so the
  direct-to-reverberant energy ratio is ``drr_db``."""
  n = max(int(rt60 * sample_rate), 2)
  t = np.arange(1, n) / sample_rate
  tail = rng.standard_normal(n - 1) * np.exp(-3.0 * np.log(10.0) * t / rt60)
  tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail ** 2))
  return np.concatenate([[1.0], tail])


def lowpass(x: np.ndarray, cutoff_hz: float, sample_rate: int) -> np.ndarray:
  from scipy import signal  # pylint: disable=g-import-not-at-top
  sos = signal.butter(4, cutoff_hz, btype='low', fs=sample_rate, output='sos')
  return signal.sosfiltfilt(sos, x)


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
  """Unit-RMS noise with power spectrum 1/f^a: white a=0, pink a=1, brown a=2."""
  a = NOISE_COLOURS.index(colour)
  spec = np.fft.rfft(rng.standard_normal(n))
  f = np.arange(len(spec), dtype=np.float64)
  f[0] = 1.0
  spec /= f ** (a / 2.0)
  spec[0] = 0.0
  x = np.fft.irfft(spec, n)
  return x / np.sqrt(np.mean(x ** 2))


def rms(x: np.ndarray) -> float:
  return float(np.sqrt(np.mean(x ** 2) + 1e-20))


def render_hard(word, other, clip_samples: int, sample_rate: int, rng: np.random.Generator):
  """(float64 clip, offset of ``word`` in it): ``word`` placed, then each of the competing talker
  ``other``, the room, the low-pass and the noise applied with probability ``AUGMENT_PROB``, then
  the gain; see the module docstring. Every random number is drawn whether or not its step is
  applied, so the steps' draws do not depend on one another."""
  from scipy import signal  # pylint: disable=g-import-not-at-top
  talker, room, channel, noisy = rng.random(4) < AUGMENT_PROB
  offset = random_offset(len(word), clip_samples, rng)
  speech = place(word, clip_samples, offset)
  lo, hi = max(offset, 0), min(offset + len(word), clip_samples)
  level = rms(speech[lo:hi])
  gain_db = rng.uniform(*INTERFERER_DB)
  competitor = place(other, clip_samples, random_offset(len(other), clip_samples, rng))
  mix = speech + talker * competitor * (level / rms(other) * 10.0 ** (gain_db / 20.0))
  h = room_impulse(rng.uniform(*RT60_S), rng.uniform(*DRR_DB), sample_rate, rng)
  if room:
    mix = signal.fftconvolve(mix, h)[:clip_samples]
  cutoff = rng.uniform(*LOWPASS_HZ)
  if channel:
    mix = lowpass(mix, cutoff, sample_rate)
  noise = coloured_noise(clip_samples, NOISE_COLOURS[rng.integers(len(NOISE_COLOURS))], rng)
  snr_db = rng.uniform(*SNR_DB)
  mix = mix + noisy * noise * rms(mix[lo:hi]) * 10.0 ** (-snr_db / 20.0)
  peak = 10.0 ** (rng.uniform(*PEAK_DBFS) / 20.0)
  return mix * (peak / max(np.max(np.abs(mix)), 1e-9)), offset


def render_clean(word, clip_samples: int):
  """(clip, offset): the word centred (cropped symmetrically when longer than the clip)."""
  offset = (clip_samples - len(word)) // 2
  return place(word, clip_samples, offset), offset


def frame_labels(track: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
  """Per-sample ids of a clip -> the id at the centre of each 50 Hz frame."""
  hop, win = frame_geometry(sample_rate)
  centres = np.arange(num_frames(len(track), sample_rate)) * hop + win // 2
  return track[centres]


def to_pcm16(x: np.ndarray) -> np.ndarray:
  return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def build_split(utterances, speaker_ids, num_words: int, phone_ids: dict,
                config: SpeechSetConfig, split_index: int) -> dict:
  """The clips of one split: every speaker in ``speaker_ids`` saying every word."""
  n_frames = num_frames(config.clip_samples, config.sample_rate)
  n = len(speaker_ids) * num_words
  audio = np.zeros((n, config.clip_samples), np.int16)
  label = np.zeros(n, np.int32)
  speaker = np.zeros(n, np.int32)
  phones = np.zeros((n, n_frames), np.int16)
  for k, (s, w) in enumerate((s, w) for s in speaker_ids for w in range(num_words)):
    word, segs = utterances[s][w]
    if config.hard:
      rng = np.random.default_rng([config.seed, 1, split_index, s, w])
      others = [o for o in speaker_ids if o != s] or [s]   # a one-speaker split: the same voice
      o = others[rng.integers(len(others))]
      ow = (w + 1 + int(rng.integers(num_words - 1))) % num_words if num_words > 1 else w
      clip, offset = render_hard(word, utterances[o][ow][0], config.clip_samples,
                                 config.sample_rate, rng)
    else:
      clip, offset = render_clean(word, config.clip_samples)
    track = place(phone_track(len(word), segs, phone_ids), config.clip_samples, offset)
    audio[k], label[k], speaker[k] = to_pcm16(clip), w, s
    phones[k] = frame_labels(track, config.sample_rate)
  return {'audio': audio, 'label': label, 'speaker': speaker, 'phones': phones}


def generate(config: SpeechSetConfig) -> dict:
  """The whole set as flat arrays ('train_audio', ..., 'test_phones', 'words', 'phone_names',
  speaker table). Call it in a fresh process (``generate_cached`` does): espeak-ng's output
  depends on what the process synthesised before."""
  check_name(config.name)
  start = time.time()
  words = VOCABULARY[config.name]
  n_train, n_test = config.num_train_speakers, config.num_test_speakers
  speakers = draw_speakers(n_train + n_test, config.seed)
  utterances = synthesize_all(words, speakers, config.sample_rate, config.seed)
  names = sorted({p for row in utterances for _, segs in row for _, _, p in segs})
  phone_ids = {p: i + 1 for i, p in enumerate(names)}
  out = {'words': np.array(words), 'phone_names': np.array((SILENCE,) + tuple(names))}
  for split_index, (split, ids) in enumerate((('train', range(n_train)),
                                              ('test', range(n_train, n_train + n_test)))):
    for key, value in build_split(utterances, list(ids), len(words), phone_ids, config,
                                  split_index).items():
      out[f'{split}_{key}'] = value
  for key in ('accent', 'variant', 'rate', 'pitch', 'range'):
    out[f'speaker_{key}'] = np.array([s[key] for s in speakers])
  out['generation_seconds'] = np.float64(time.time() - start)
  return out


# ------------------------------------------------------------------------------------------------
# Cache.
# ------------------------------------------------------------------------------------------------

def default_cache_dir() -> str:
  return os.environ.get('SSL_JAX_CACHE') or os.path.join(os.path.expanduser('~'), '.cache',
                                                         'ssl_jax', 'speech')


def config_key(config: SpeechSetConfig) -> str:
  """Hash of everything the arrays depend on: config, vocabulary, voices, the rendering ranges,
  the generator and espeak-ng data version."""
  try:
    from importlib.metadata import version  # pylint: disable=g-import-not-at-top
    espeak_version = version('espeakng-loader')
  except Exception:  # pylint: disable=broad-except
    espeak_version = 'unknown'
  ranges = (RATE, PITCH, PITCH_RANGE, INTERFERER_DB, RT60_S, DRR_DB, LOWPASS_HZ, SNR_DB,
            PEAK_DBFS, NOISE_COLOURS, AUGMENT_PROB)
  blob = json.dumps({'config': dataclasses.asdict(config), 'words': VOCABULARY[config.name],
                     'accents': ACCENTS, 'variants': VARIANTS, 'ranges': ranges,
                     'version': GENERATOR_VERSION, 'espeakng_loader': espeak_version},
                    sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_path(config: SpeechSetConfig, cache_dir: str | None = None) -> str:
  return os.path.join(cache_dir or default_cache_dir(), f'{config.name}-{config_key(config)}.npz')


def generate_in_subprocess(config: SpeechSetConfig, path: str) -> None:
  """Runs ``generate`` in a fresh interpreter that writes ``path`` (``.npz``)."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join([root] + [p for p in [env.get('PYTHONPATH')] if p])
  cmd = [sys.executable, '-m', 'ssl_jax.data.speech', '--generate',
         json.dumps(dataclasses.asdict(config)), path]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f'generating speech set {config.name!r} failed:\n{proc.stderr[-4000:]}')


def generate_cached(config: SpeechSetConfig, cache_dir: str | None = None) -> str:
  """Path of the set's cache file, generating it (in a fresh process) if absent."""
  path = cache_path(config, cache_dir)
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path[:-4]}.tmp-{os.getpid()}.npz'
    try:
      generate_in_subprocess(config, tmp)
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  return path


# ------------------------------------------------------------------------------------------------
# Public API.
# ------------------------------------------------------------------------------------------------

def load_speech_set(name: str, split: str, *, config: SpeechSetConfig | None = None,
                    cache_dir: str | None = None) -> dict:
  """Split 'train' | 'test' of speech set ``name``: ``audio`` float32 (N, clip_samples) in
  [-1, 1], ``label`` int32 (N,), ``speaker`` int32 (N,), ``phones`` int16 (N, num_frames),
  ``words`` and ``phone_names`` (tuples of str). Generated on first use, then read from the
  cache."""
  check_name(name)
  config = config or SpeechSetConfig(name=name)
  if config.name != name:
    raise ValueError(f'load_speech_set({name!r}) was given a config for {config.name!r}')
  if split not in ('train', 'test'):
    raise ValueError(f"split {split!r} of speech set {name!r} is unknown; use 'train' or 'test'")
  with np.load(generate_cached(config, cache_dir), allow_pickle=False) as f:
    return {'audio': f[f'{split}_audio'].astype(np.float32) / np.float32(32767.0),
            'label': f[f'{split}_label'], 'speaker': f[f'{split}_speaker'],
            'phones': f[f'{split}_phones'], 'words': tuple(str(w) for w in f['words']),
            'phone_names': tuple(str(p) for p in f['phone_names'])}


class AudioArraySource:
  """A random-access source over in-memory waveforms (N, L) float32 and labels (N,):
  ``self[i] = {'audio': float32 (L,), 'label': int32, 'index': int64}``."""

  def __init__(self, audio: np.ndarray, labels: np.ndarray, num_classes: int,
               name: str = 'audio'):
    if len(audio) == 0:
      raise ValueError(f'data source {name!r} is empty')
    self.audio = np.ascontiguousarray(audio, np.float32)
    self.labels = np.asarray(labels, np.int32)
    self.num_classes = int(num_classes)
    self.name = name

  def __len__(self) -> int:
    return len(self.audio)

  def __getitem__(self, i):
    return {'audio': self.audio[i], 'label': self.labels[i], 'index': np.int64(i)}

  def __repr__(self):
    return f'AudioArraySource({self.name}, n={len(self)}, samples={self.audio.shape[1]})'


def speech_set_config(data_cfg) -> SpeechSetConfig:
  """The built-in speech set ``config.data`` names: ``data.name`` with ``data.speech_speakers``
  (train, test) voices (default (100, 30))."""
  train, test = tuple(data_cfg.get('speech_speakers', ()) or ()) or (100, 30)
  return SpeechSetConfig(name=data_cfg.name, num_train_speakers=int(train),
                         num_test_speakers=int(test))


def speech_source(name: str, split: str, config: SpeechSetConfig | None = None,
                  cache_dir: str | None = None) -> AudioArraySource:
  """Speech set ``name``'s split ('train' | 'test') as an ``AudioArraySource``."""
  d = load_speech_set(name, split, config=config, cache_dir=cache_dir)
  return AudioArraySource(d['audio'], d['label'], len(d['words']), name=f'{name}:{split}')


# ------------------------------------------------------------------------------------------------
# MFCC.
# ------------------------------------------------------------------------------------------------

def hz_to_mel(f):
  return 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
  return 700.0 * np.expm1(np.asarray(m, np.float64) / 1127.0)


def mel_filterbank(num_filters: int = 40, n_fft: int = 512, sample_rate: int = 16000,
                   low_hz: float = 20.0, high_hz: float | None = None) -> np.ndarray:
  """(num_filters, n_fft // 2 + 1) triangles equally spaced on the mel scale (Kaldi's: the
  triangle is linear in mel)."""
  high_hz = high_hz or sample_rate / 2.0
  edges = np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), num_filters + 2)
  mel = hz_to_mel(np.arange(n_fft // 2 + 1) * sample_rate / n_fft)
  left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  up = (mel - left) / (centre - left)
  down = (right - mel) / (right - centre)
  return np.maximum(0.0, np.minimum(up, down))


def frames(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
  """(..., L) -> (..., num_frames, window): frame t = samples [hop t, hop t + window)."""
  hop, win = frame_geometry(sample_rate)
  return np.lib.stride_tricks.sliding_window_view(audio, win, axis=-1)[..., ::hop, :]


def log_mel(audio: np.ndarray, sample_rate: int = 16000, num_filters: int = 40,
            n_fft: int = 512) -> np.ndarray:
  """(..., L) -> (..., num_frames, num_filters) float64 log mel energies."""
  x = frames(np.asarray(audio, np.float64), sample_rate)
  x = x - x.mean(axis=-1, keepdims=True)
  x = np.concatenate([x[..., :1] * (1 - 0.97), x[..., 1:] - 0.97 * x[..., :-1]], axis=-1)
  x = x * np.hamming(x.shape[-1])
  power = np.abs(np.fft.rfft(x, n_fft, axis=-1)) ** 2
  energies = power @ mel_filterbank(num_filters, n_fft, sample_rate).T
  return np.log(np.maximum(energies, np.finfo(np.float32).eps))


def dct_matrix(num_ceps: int, num_filters: int) -> np.ndarray:
  """(num_filters, num_ceps) orthonormal DCT-II: c_k = s_k sum_n x_n cos(pi k (n + 1/2) / N)."""
  n = np.arange(num_filters)[:, None]
  k = np.arange(num_ceps)[None, :]
  m = np.cos(np.pi * k * (n + 0.5) / num_filters) * np.sqrt(2.0 / num_filters)
  m[:, 0] /= np.sqrt(2.0)
  return m


def compute_deltas(x: np.ndarray, width: int = 2) -> np.ndarray:
  """d_t = sum_n n (x_{t+n} - x_{t-n}) / (2 sum_n n^2), n = 1..width, over axis -2 (frames),
  edge frames repeated (torchaudio ``compute_deltas`` with win_length 5)."""
  pad = [(0, 0)] * (x.ndim - 2) + [(width, width), (0, 0)]
  xp = np.pad(x, pad, mode='edge')
  t = x.shape[-2]
  num = sum(n * (xp[..., width + n:width + n + t, :] - xp[..., width - n:width - n + t, :])
            for n in range(1, width + 1))
  return num / (2.0 * sum(n * n for n in range(1, width + 1)))


def mfcc(audio: np.ndarray, sample_rate: int = 16000, num_ceps: int = 13,
         deltas: bool = True, chunk: int = 256) -> np.ndarray:
  """(N, L) or (L,) waveforms -> float32 (..., num_frames, num_ceps * 3) MFCC + deltas +
  delta-deltas (or (..., num_frames, num_ceps) with ``deltas=False``), one frame per 20 ms aligned
  with the conv encoder's frames. Batches are processed ``chunk`` clips at a time."""
  audio = np.asarray(audio)
  if audio.ndim == 2 and len(audio) > chunk:
    return np.concatenate([mfcc(audio[i:i + chunk], sample_rate, num_ceps, deltas, chunk)
                           for i in range(0, len(audio), chunk)])
  logmel = log_mel(audio, sample_rate)
  ceps = logmel @ dct_matrix(num_ceps, logmel.shape[-1])
  if deltas:
    d = compute_deltas(ceps)
    ceps = np.concatenate([ceps, d, compute_deltas(d)], axis=-1)
  return ceps.astype(np.float32)


def mfcc_jax(audio, sample_rate: int = 16000, num_ceps: int = 13, deltas: bool = True,
             chunk: int = 256):
  """:func:`mfcc` in jax.numpy, jittable, for labels computed on device (HuBERT's first
  iteration, ``methods/speech/hubert.py``): the same frames, window, filterbank, DCT and deltas,
  in float32 (the numpy one works in float64 and rounds at the end). Its matmuls run at
  ``HIGHEST`` precision, so an accelerator's default reduced-precision float32 dots do not move
  the coefficients. ``chunk`` clips at a time, as :func:`mfcc`."""
  import jax  # pylint: disable=g-import-not-at-top  # the generator subprocess needs no jax
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  audio = jnp.asarray(audio, jnp.float32)
  if audio.ndim == 2 and audio.shape[0] > chunk:
    return jnp.concatenate([mfcc_jax(audio[i:i + chunk], sample_rate, num_ceps, deltas, chunk)
                            for i in range(0, audio.shape[0], chunk)])
  hi = jax.lax.Precision.HIGHEST
  hop, win = frame_geometry(sample_rate)
  t = num_frames(audio.shape[-1], sample_rate)
  # Frame t = samples [hop t, hop t + win): the first win - hop samples of hop-sample block t + 1
  # appended to block t (win <= 2 hop), slices instead of a gather.
  need = (t + 1) * hop
  x = audio[..., :need] if audio.shape[-1] >= need else jnp.pad(
      audio, [(0, 0)] * (audio.ndim - 1) + [(0, need - audio.shape[-1])])
  blocks = x.reshape(x.shape[:-1] + (t + 1, hop))
  x = jnp.concatenate([blocks[..., :t, :], blocks[..., 1:, :win - hop]], axis=-1)
  x = x - x.mean(axis=-1, keepdims=True)
  x = jnp.concatenate([x[..., :1] * (1 - 0.97), x[..., 1:] - 0.97 * x[..., :-1]], axis=-1)
  x = x * jnp.asarray(np.hamming(win), jnp.float32)
  n_fft = 512
  spec = jnp.fft.rfft(x, n_fft, axis=-1)
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
  bank = jnp.asarray(mel_filterbank(40, n_fft, sample_rate).T, jnp.float32)
  logmel = jnp.log(jnp.maximum(jnp.matmul(power, bank, precision=hi),
                               np.finfo(np.float32).eps))
  ceps = jnp.matmul(logmel, jnp.asarray(dct_matrix(num_ceps, 40), jnp.float32), precision=hi)
  if deltas:
    d = _deltas_jax(ceps)
    ceps = jnp.concatenate([ceps, d, _deltas_jax(d)], axis=-1)
  return ceps


def _deltas_jax(x, width: int = 2):
  """:func:`compute_deltas` in jax.numpy."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  xp = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(width, width), (0, 0)], mode='edge')
  t = x.shape[-2]
  num = sum(n * (xp[..., width + n:width + n + t, :] - xp[..., width - n:width - n + t, :])
            for n in range(1, width + 1))
  return num / (2.0 * sum(n * n for n in range(1, width + 1)))


def pooled_mfcc(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
  """(N, L) -> (N, 78): mean and std over frames of the 39-d MFCC (the baseline features)."""
  m = mfcc(audio, sample_rate)
  return np.concatenate([m.mean(axis=-2), m.std(axis=-2)], axis=-1)


def _main(argv: list[str]) -> None:
  if argv[:1] == ['--generate']:
    config = SpeechSetConfig(**json.loads(argv[1]))
    np.savez_compressed(argv[2], **generate(config))
  else:
    raise SystemExit('usage: python -m ssl_jax.data.speech --generate CONFIG_JSON OUT.npz '
                     '(the measurement: python -m ssl_jax.eval.speech --measure)')


if __name__ == '__main__':
  _main(sys.argv[1:])
