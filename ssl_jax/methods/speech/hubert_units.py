r"""HuBERT's hidden units, offline: the k-means of each iteration's targets and the units file the
method reads (``methods/speech/hubert.py``).

Hsu et al., "HuBERT: Self-Supervised Speech Representation Learning by Masked Prediction of Hidden
Units", TASLP 2021, Sec. III: iteration 1 clusters 39-d MFCC frames (K = 100); iteration 2 clusters
a layer of the iteration-1 model (layer 6 of BASE's 12, K = 500), and so on. fairseq's recipe
(``examples/hubert/simple_kmeans``: ``dump_mfcc_feature.py`` / ``dump_hubert_feature.py``,
``learn_kmeans.py``, ``dump_km_label.py``) writes the labels of every utterance to disk before
pre-training. Here only the centroids are written: the method labels each training clip on device
(nearest centroid of its MFCC frames, or of the frozen encoder's layer), so the units file holds

* ``centroids`` (K, D) float32, ``source`` ('mfcc' | 'layer'), ``layer`` (1-based block, 0 for
  MFCC), ``num_units``, ``pnmi`` (NaN when the data has no phone labels), ``version``;
* for 'layer' also the frozen encoder: its parameters flattened with '/' under ``encoder/``
  (``encoder/feature_extractor/conv_layers_0/conv/kernel``, ...), its ``config.model`` as JSON
  (``model_config``; rebuilt with ``models.build_backbone``) and ``audio_normalize`` (whether it
  read standardised clips).

Command (``ssl_jax/eval/hubert_units.py``: it reads a checkpoint, so it sits with the readers of a
run; ``--config`` gives the data and the k-means settings, ``config.method.kmeans_*``)::

    # iteration 1: MFCC units (prints PNMI against the built-in sets' frame phone labels)
    python -m ssl_jax.eval.hubert_units --config=configs/hubert.py:builtin \
        --units=mfcc --num_units=100 --out=/tmp/units_it1.npz
    # iteration 2: units of block N of the run in --workdir (its latest checkpoint, read-only)
    python -m ssl_jax.eval.hubert_units --config=configs/hubert.py:builtin \
        --units=layer --workdir=/tmp/hubert_it1 --layer=1 --num_units=100 --out=/tmp/units_it2.npz

Frames clustered: every 20 ms frame of up to ``kmeans_max_clips`` training records (a seeded
subset when there are more; fairseq clusters a 10 % subset), whole records as fairseq (the
built-in sets' 1 s clips; a folder's files cut to their centre ``data.clip_samples`` window, the
frames past a shorter file's end dropped). MFCCs are computed on the raw waveform (fairseq's
``dump_mfcc_feature`` reads the wav as is); the encoder reads what it was trained on (standardised
when its ``model.audio_normalize``). k-means: ``data.kmeans.fit_kmeans`` (k-means++ then Lloyd, or
mini-batches of ``kmeans_batch_size`` frames), deterministic in (frames, K, seed).

Measured on ``spoken_words``' 3,500 training clips (171,500 frames, 62 % silence; 2-core Xeon,
shared): MFCC 1.6 s; full-batch k-means K = 50 / 100 / 200 / 500 in 7 / 8 / 21 / 102 s, PNMI
0.244 / 0.280 / 0.322 / 0.388 (K = 100, seeds 1 and 2: 0.279 / 0.280). ``--units=layer`` on the
``builtin`` run (K = 100): 42 s for the command; PNMI of blocks 1-4 in ``configs/hubert.py``.

Without ``units_path``, MFCC units are fitted by the method itself (:func:`cached_mfcc_centroids`)
and cached under the speech cache dir (``$SSL_JAX_CACHE`` or ``~/.cache/ssl_jax/speech``), keyed by
the data, K, the seed and the k-means settings.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import uuid

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from ssl_jax import models
from ssl_jax import paths
from ssl_jax.data import audio as audio_lib
from ssl_jax.data import kmeans
from ssl_jax.data import speech

#: Bump when the units (or their cache) change for the same inputs; part of the cache key.
UNITS_VERSION = 1
SOURCES = ('mfcc', 'layer')
_ENCODER = 'encoder/'


# ------------------------------------------------------------------------------------------------
# The training frames.
# ------------------------------------------------------------------------------------------------

def _subset(n: int, max_clips: int, seed: int) -> np.ndarray:
  if max_clips <= 0 or n <= max_clips:
    return np.arange(n)
  return np.sort(np.random.default_rng([seed, 7]).choice(n, max_clips, replace=False))


def training_clips(config, max_clips: int, seed: int) -> dict:
  """Up to ``max_clips`` records of ``config.data``'s training split (a subset seeded by
  ``seed`` when there are more): ``audio`` (N, L) float32 raw waveforms, ``frames`` (N,) the
  number of real 20 ms frames of each, ``phones`` (N, T) int frame phone labels (built-in sets)
  or None, ``indices`` (N,) the records taken."""
  data = config.data
  split = data.get('train_split', 'train')
  if data.source == 'builtin':
    d = speech.load_speech_set(data.name, split, config=speech.speech_set_config(data))
    idx = _subset(len(d['audio']), max_clips, seed)
    audio = d['audio'][idx]
    frames = np.full(len(idx), speech.num_frames(audio.shape[1]), np.int32)
    return {'audio': audio, 'frames': frames, 'phones': d['phones'][idx], 'indices': idx}
  from ssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  source = sources.get_source(data, split)
  idx = _subset(len(source), max_clips, seed)
  length = int(data.clip_samples)
  audio = np.zeros((len(idx), length), np.float32)
  frames = np.zeros(len(idx), np.int32)
  for row, i in enumerate(idx):
    wave = np.asarray(source[int(i)]['audio'], np.float32)
    start = max(0, (len(wave) - length) // 2)
    audio[row] = audio_lib.fit_length(wave, length, start)
    frames[row] = speech.num_frames(min(len(wave), length))
  return {'audio': audio, 'frames': frames, 'phones': None, 'indices': idx}


def _real_frames(x, frames) -> np.ndarray:
  """(N, T, ...) per-clip frames -> (sum of frames, ...): each clip's first ``frames[i]``."""
  x = np.asarray(x)
  keep = np.arange(x.shape[1])[None, :] < np.asarray(frames)[:, None]
  return x[keep]


def _fit(features, num_units: int, seed: int, hp) -> np.ndarray:
  return kmeans.fit_kmeans(features, num_units, seed=seed, iters=hp.kmeans_iters,
                           batch_size=hp.kmeans_batch_size or None)


def _pnmi(clips, units) -> float:
  if clips['phones'] is None:
    return float('nan')
  return kmeans.pnmi(_real_frames(clips['phones'], clips['frames']), units)


def _hparams(config):
  from ssl_jax import methods  # pylint: disable=g-import-not-at-top  # the registry, by string
  hp = methods.method_hparams(config)
  if not hasattr(hp, 'kmeans_max_clips'):
    raise ValueError("the units command reads a HuBERT config's data and k-means settings "
                     '(configs/hubert.py); this config trains another method')
  return hp


# ------------------------------------------------------------------------------------------------
# Iteration 1: MFCC units.
# ------------------------------------------------------------------------------------------------

def mfcc_units(config, num_units: int, seed: int) -> tuple[np.ndarray, float]:
  """(centroids (K, 39) float32, PNMI or NaN): k-means of the MFCC frames (``speech.mfcc``, raw
  waveforms) of ``config.data``'s training records, ``config.method.kmeans_*`` settings."""
  hp = _hparams(config)
  clips = training_clips(config, hp.kmeans_max_clips, seed)
  feats = _real_frames(speech.mfcc(clips['audio']), clips['frames'])
  centroids = _fit(feats, num_units, seed, hp)
  return centroids, _pnmi(clips, kmeans.assign(feats, centroids))


def mfcc_cache_path(config, num_units: int, seed: int) -> str:
  """Where :func:`cached_mfcc_centroids` keeps the centroids: the speech cache dir, a file named
  by a hash of everything they depend on (the data, K, seed, k-means settings)."""
  hp = _hparams(config)
  d = config.data
  data = {'source': d.source, 'name': d.name, 'path': d.get('path', ''),
          'split': d.get('train_split', 'train'), 'clip_samples': int(d.clip_samples)}
  if d.source == 'builtin':
    data['speech_set'] = speech.config_key(speech.speech_set_config(d))
  blob = json.dumps({'data': data, 'num_units': int(num_units), 'seed': int(seed),
                     'max_clips': hp.kmeans_max_clips, 'iters': hp.kmeans_iters,
                     'batch_size': hp.kmeans_batch_size, 'version': UNITS_VERSION},
                    sort_keys=True)
  key = hashlib.sha256(blob.encode()).hexdigest()[:16]
  return os.path.join(speech.default_cache_dir(), f'hubert_mfcc_units-{key}.npz')


def cached_mfcc_centroids(config, num_units: int, seed: int) -> np.ndarray:
  """:func:`mfcc_units`' centroids, read from their cache file, or fitted and cached (written
  to a temporary name and renamed: a concurrent reader sees a whole file or none)."""
  path = mfcc_cache_path(config, num_units, seed)
  if os.path.exists(path):
    return load_units(path)['centroids']
  centroids, pnmi = mfcc_units(config, num_units, seed)
  save_units(path, centroids, 'mfcc', pnmi=pnmi)
  return centroids


# ------------------------------------------------------------------------------------------------
# Iteration 2+: units of a trained encoder's layer.
# ------------------------------------------------------------------------------------------------

def frozen_encoder(model_config: dict, layer: int):
  """The encoder of ``model_config`` (a ``config.model`` dict) cut after block ``layer``: its
  ``encode()['layers'][layer - 1]`` is the full encoder's (the blocks after it do not feed it)."""
  cfg = ml_collections.ConfigDict(dict(model_config))
  encoder = models.build_backbone(cfg)
  if not 1 <= layer <= encoder.depth:
    raise ValueError(f'layer={layer} must be in [1, {encoder.depth}] (the blocks of the '
                     f'{cfg.backbone} encoder)')
  return encoder.clone(depth=layer)


def truncate_params(params: dict, layer: int) -> dict:
  """The encoder parameters :func:`frozen_encoder` (``layer``) reads: blocks past it dropped."""
  drop = lambda k: k.startswith('layers_') and int(k.split('_')[1]) >= layer
  return {k: v for k, v in params.items() if not drop(k)}


def layer_features(encoder, params, audio, layer: int, normalize: bool,
                   batch_size: int = 64) -> np.ndarray:
  """(N, T, D) float32: block ``layer``'s output (``encode()['layers'][layer - 1]``, eval mode)
  of ``encoder`` on the (N, L) waveforms, standardised per clip first when ``normalize``; jitted,
  in fixed batches (the last one padded)."""

  @jax.jit
  def run(p, x):
    x = audio_lib.standardize(x) if normalize else x
    return encoder.apply({'params': p}, x, train=False,
                         method=type(encoder).encode)['layers'][layer - 1]

  audio = np.asarray(audio, np.float32)
  out = []
  for i in range(0, len(audio), batch_size):
    x = audio[i:i + batch_size]
    n = len(x)
    if n < batch_size:
      x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:], x.dtype)])
    out.append(np.asarray(run(params, x))[:n])
  return np.concatenate(out)


def layer_units_from_params(config, params, model_config: dict, audio_normalize: bool,
                            layer: int, num_units: int, seed: int) -> dict:
  """k-means of block ``layer``'s features of the encoder (``params``, ``model_config``) on
  ``config.data``'s training records: the :func:`save_units` fields of a 'layer' units file."""
  hp = _hparams(config)
  encoder = frozen_encoder(model_config, layer)
  kept = truncate_params(params, layer)
  clips = training_clips(config, hp.kmeans_max_clips, seed)
  feats = _real_frames(layer_features(encoder, kept, clips['audio'], layer, audio_normalize),
                       clips['frames'])
  centroids = _fit(feats, num_units, seed, hp)
  return {'centroids': centroids, 'source': 'layer', 'layer': layer,
          'encoder_params': jax.device_get(params), 'model_config': dict(model_config),
          'audio_normalize': bool(audio_normalize),
          'pnmi': _pnmi(clips, kmeans.assign(feats, centroids))}


# ------------------------------------------------------------------------------------------------
# The units file.
# ------------------------------------------------------------------------------------------------

def save_units(path: str, centroids, source: str, *, layer: int = 0, encoder_params=None,
               model_config: dict | None = None, audio_normalize: bool | None = None,
               pnmi: float = float('nan')) -> str:
  """Writes a units file (module docstring) to ``path`` (local, written to a temporary name and
  renamed; or a URL). Returns the path."""
  if source not in SOURCES:
    raise ValueError(f'units source {source!r} must be one of {SOURCES}')
  centroids = np.asarray(centroids, np.float32)
  arrays = {'centroids': centroids, 'source': np.array(source), 'layer': np.int32(layer),
            'num_units': np.int32(len(centroids)), 'pnmi': np.float64(pnmi),
            'version': np.int32(UNITS_VERSION)}
  if source == 'layer':
    if encoder_params is None or model_config is None or audio_normalize is None:
      raise ValueError("'layer' units need encoder_params, model_config and audio_normalize")
    if layer < 1:
      raise ValueError(f"'layer' units need layer >= 1, got {layer}")
    arrays['model_config'] = np.array(json.dumps(model_config, sort_keys=True))
    arrays['audio_normalize'] = np.bool_(audio_normalize)
    flat = traverse_util.flatten_dict(jax.device_get(encoder_params), sep='/')
    arrays.update({_ENCODER + k: np.asarray(v) for k, v in flat.items()})
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  target = paths.as_path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  if paths.is_remote(target):
    target.write_bytes(buf.getvalue())
    return str(target)
  tmp = f'{target}.tmp-{uuid.uuid4().hex[:8]}'
  try:
    with open(tmp, 'wb') as f:
      f.write(buf.getvalue())
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return str(target)


def _npy_spec(fp) -> jax.ShapeDtypeStruct:
  """Shape and dtype of the .npy array at ``fp`` from its header alone."""
  version = np.lib.format.read_magic(fp)
  read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
          else np.lib.format.read_array_header_2_0)
  shape, _, dtype = read(fp)
  return jax.ShapeDtypeStruct(shape, dtype)


def load_units(path: str, arrays: bool = True) -> dict:
  """A units file as a dict: ``centroids``, ``source``, ``layer``, ``num_units``, ``pnmi`` and,
  for 'layer', ``encoder`` (nested params), ``model_config`` (dict), ``audio_normalize``.

  ``arrays=False`` reads the small fields and only the headers of the arrays: ``centroids`` and
  the ``encoder`` leaves are ``jax.ShapeDtypeStruct`` (a run's shapes, without reading the
  encoder)."""
  target = paths.as_path(path)
  if not target.exists():
    raise FileNotFoundError(f'units file {path} does not exist')
  with target.open('rb') as fp:
    npz = np.load(fp, allow_pickle=False)
    names = list(npz.files)
    small = {k: npz[k] for k in names if not k.startswith(_ENCODER) and k != 'centroids'}
    if arrays:
      big = {k: npz[k] for k in names if k.startswith(_ENCODER) or k == 'centroids'}
    else:
      big = {}
      for k in names:
        if k.startswith(_ENCODER) or k == 'centroids':
          with npz.zip.open(k + '.npy') as member:
            big[k] = _npy_spec(member)
  out = {'centroids': big['centroids'], 'source': str(small['source']),
         'layer': int(small['layer']), 'num_units': int(small['num_units']),
         'pnmi': float(small['pnmi']), 'version': int(small['version'])}
  if out['source'] not in SOURCES:
    raise ValueError(f"units file {path}: source {out['source']!r} is not one of {SOURCES}")
  if out['source'] == 'layer':
    out['model_config'] = json.loads(str(small['model_config']))
    out['audio_normalize'] = bool(small['audio_normalize'])
    flat = {k[len(_ENCODER):]: v for k, v in big.items() if k.startswith(_ENCODER)}
    out['encoder'] = traverse_util.unflatten_dict(flat, sep='/')
  return out
