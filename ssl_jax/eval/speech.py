"""Speech evaluators (``data.modality='audio'``), beside the utterance kNN every run gets:

* **frame phone probe** — a linear classifier of the 20 ms frame features of one encoder block
  (``eval.speech_layer``; 0 = the last) trained on the train split's phone frames and scored on
  the test split's (unseen speakers): phone accuracy over the frames inside a word (silence
  frames, ~60 % of the clips, left out), the SUPERB-style phoneme probe reduced to a linear
  read-out of frames;
* **PNMI** — phone-normalised mutual information I(phone; unit) / H(phone) of k-means units
  (``eval.speech_units`` clusters, fitted on train frames, assigned on test frames) of every
  block's frames (HuBERT, Hsu et al. 2021, Sec. IV-F: how well a layer's clusters carry phonetic
  content), and of MFCC frames, the first HuBERT iteration's features, for reference.

Both need frame-level phone labels, which the built-in speech sets carry (``data/speech.py``,
``phones`` of the 49 frames of a 1 s clip, aligned with the conv encoder's frames) and a folder of
.wav files does not (then nothing is reported, with the reason). Frames are subsampled
(``MAX_FRAMES``) for the probe and the k-means, with a fixed seed.
"""
from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.data import kmeans, speech
from ssl_jax.eval import knn, linear

MAX_FRAMES = 40_000


def _speech_set(data_cfg, split: str) -> dict:
  return speech.load_speech_set(data_cfg.name, split, config=speech.speech_set_config(data_cfg))


def block_encoder(method):
  """jit of (backbone params, clips (B, L)) -> every block's frames of ``method``'s encoder on
  its eval input, eval mode."""
  backbone = method.backbone
  return jax.jit(lambda p, x: backbone.apply({'params': p}, method.normalize(x),
                                             method=type(backbone).encode)['layers'])


def block_frames(method, params, audio, batch_size: int = 64, fn=None) -> list[np.ndarray]:
  """[(N, T, D) per block] frame features of the clips ``audio`` (N, L), eval mode (``fn``: a
  :func:`block_encoder` of ``method`` to reuse)."""
  fn = fn or block_encoder(method)
  out = None
  for i in range(0, len(audio), batch_size):
    chunk = audio[i:i + batch_size]
    pad = batch_size - len(chunk)
    x = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)]) if pad else chunk
    layers = [np.asarray(l, np.float32)[:len(chunk)] for l in fn(params, jnp.asarray(x))]
    out = [[l] for l in layers] if out is None else [o + [l] for o, l in zip(out, layers)]
  return [np.concatenate(o) for o in out]


def _subsample(n: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.sort(rng.permutation(n)[:min(n, MAX_FRAMES)])


def frame_pnmi(train_frames, test_frames, test_phones, num_units: int, seed: int = 0) -> float:
  """PNMI of ``num_units`` k-means units fitted on (a subsample of) ``train_frames`` (N, D) and
  assigned to ``test_frames``, against ``test_phones``."""
  pick = _subsample(len(train_frames), seed)
  centroids = kmeans.fit_kmeans(train_frames[pick], num_units, seed=seed)
  return float(kmeans.pnmi(test_phones, kmeans.assign(test_frames, centroids)))


def frame_probe(train_frames, train_phones, test_frames, test_phones, num_phones: int,
                seed: int = 0) -> float:
  """Test frame accuracy of a linear phone classifier trained on the train frames."""
  pick = _subsample(len(train_frames), seed)
  cfg = linear.ProbeConfig(epochs=20, batch_size=1024, lr=0.4, seed=seed)
  return float(linear.linear_probe(train_frames[pick], train_phones[pick], test_frames,
                                   test_phones, num_phones, cfg)['top1'])


def evaluate(method, params, config) -> dict:
  """The frame phone probe and PNMI of ``params``' encoder (see the module docstring); {} with
  a ``speech_eval_skipped`` reason when the data has no phone labels."""
  d, e = config.data, config.eval
  if d.source != 'builtin' or d.name not in speech.SPEECH_SETS:
    return {'speech_eval_skipped': f'{d.source}:{d.name} has no frame phone labels'}
  tr, te = _speech_set(d, 'train'), _speech_set(d, 'test')
  if tr['audio'].shape[1] != d.clip_samples:
    return {'speech_eval_skipped': f'data.clip_samples={d.clip_samples} differs from the set\'s '
                                   f'{tr["audio"].shape[1]}-sample clips (frames would not align)'}
  num_units, seed = int(e.get('speech_units', 100)), int(config.seed)
  ph_tr, ph_te = (np.asarray(s['phones'], np.int32).reshape(-1) for s in (tr, te))
  num_phones = len(tr['phone_names'])
  fn = block_encoder(method)   # one compile for both splits
  layers_tr = block_frames(method, params['backbone'], tr['audio'], fn=fn)
  layers_te = block_frames(method, params['backbone'], te['audio'], fn=fn)
  flat = lambda x: x.reshape(-1, x.shape[-1])
  out = {}
  for i, (a, b) in enumerate(zip(layers_tr, layers_te)):
    out[f'pnmi_layer{i + 1}'] = frame_pnmi(flat(a), flat(b), ph_te, num_units, seed)
  out['pnmi_best'] = max(v for k, v in out.items() if k.startswith('pnmi_layer'))
  layer = int(e.get('speech_layer', 0)) or len(layers_tr)
  out['phone_probe_layer'] = layer
  # Phone frames only: ~60 % of a clip's frames are silence (label 0), which a probe gets right
  # from energy alone.
  sp_tr, sp_te = ph_tr > 0, ph_te > 0
  out['phone_probe_top1'] = frame_probe(flat(layers_tr[layer - 1])[sp_tr], ph_tr[sp_tr],
                                        flat(layers_te[layer - 1])[sp_te], ph_te[sp_te],
                                        num_phones, seed)
  out['phone_frames_test'] = int(sp_te.sum())
  m_tr, m_te = (flat(speech.mfcc(s['audio'])) for s in (tr, te))
  out['pnmi_mfcc'] = frame_pnmi(m_tr, m_te, ph_te, num_units, seed)
  out['speech_units'] = num_units
  return out


def mfcc_knn_top1(name: str, config: speech.SpeechSetConfig | None = None,
                  cache_dir: str | None = None, k: int = 20) -> float:
  """Weighted cosine kNN (``ssl_jax.eval.knn``) top-1 of standardised pooled MFCC, train ->
  test."""
  tr = speech.load_speech_set(name, 'train', config=config, cache_dir=cache_dir)
  te = speech.load_speech_set(name, 'test', config=config, cache_dir=cache_dir)
  f_tr, f_te = speech.pooled_mfcc(tr['audio']), speech.pooled_mfcc(te['audio'])
  mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-8
  return knn.knn_top1((f_tr - mu) / sd, tr['label'], (f_te - mu) / sd, te['label'], k=k,
                      num_classes=len(tr['words']))


def _main(argv: list[str]) -> None:
  if argv[:1] == ['--measure']:
    for name in argv[1:] or speech.SPEECH_SETS:
      for hard in (True, False):
        config = speech.SpeechSetConfig(name=name, hard=hard)
        start = time.time()
        path = speech.generate_cached(config)
        wall = time.time() - start
        with np.load(path) as f:
          gen = float(f['generation_seconds'])
          sizes = len(f['train_label']), len(f['test_label'])
        acc = mfcc_knn_top1(name, config)
        print(f'{name} hard={hard}: train/test {sizes[0]}/{sizes[1]}, generation {gen:.1f} s '
              f'(load/generate call {wall:.1f} s), cache {os.path.getsize(path) / 1e6:.0f} MB, '
              f'MFCC kNN top-1 {acc:.3f}', flush=True)
  else:
    raise SystemExit('usage: python -m ssl_jax.eval.speech --measure [name ...]')


if __name__ == '__main__':
  _main(sys.argv[1:])
