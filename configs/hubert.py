"""HuBERT (Hsu et al. 2021): masked prediction, at span-masked 20 ms frames, of k-means units of
MFCCs (iteration 1) or of the previous iteration's encoder layer (iteration 2)
(``ssl_jax/methods/speech/hubert.py``; units: ``ssl_jax/eval/hubert_units.py``).

Variants (``--config=configs/hubert.py:<variant>``):

* ``builtin`` — iteration 1 with the CPU-sized ``audio_tiny`` encoder (7-layer conv at width 64,
  4 x 128 post-LN blocks) on the built-in ``spoken_words`` set (espeak-ng voices with reverb,
  noise and a second word; test speakers unseen), 1 s clips (49 frames), batch 32, K = 100 MFCC
  units that the method fits on the training frames at its start and caches::

      python -m ssl_jax.main --config=configs/hubert.py:builtin --workdir=/tmp/hubert_it1

* ``builtin_it2`` — iteration 2: K = 100 units of block 1 of 4 of the iteration-1 encoder.
  K as iteration 1's: the 3,500 clips make 171,500 frames (62 % silence) of a 49-phone
  inventory, a thousandth of LibriSpeech's frames, for which the paper's K = 500 is sized. The
  block of highest PNMI (the paper's measure of unit quality; k-means of the training frames,
  seed 0, after the 1,500 ``builtin`` steps): blocks 1-4 0.345 / 0.340 / 0.329 / 0.314, MFCC
  0.280, a random-init encoder's blocks 0.199-0.200. Make the units file from the iteration-1
  run, then train a fresh encoder on it::

      python -m ssl_jax.eval.hubert_units --config=configs/hubert.py:builtin_it2 \\
          --units=layer --workdir=/tmp/hubert_it1 --layer=1 --out=/tmp/units_it2.npz
      python -m ssl_jax.main --config=configs/hubert.py:builtin_it2 \\
          --config.method.units_path=/tmp/units_it2.npz --workdir=/tmp/hubert_it2

  Measured (seed 0, 2-core Xeon, ~15 min a run): utterance kNN top-1 (test speakers unseen)
  0.118 after iteration 1 and 0.153 after iteration 2 (random init 0.089, pooled MFCC 0.238);
  masked unit accuracy at the end 0.24 (MFCC units) and 0.55 (block-1 units); the iteration-2
  encoder's blocks 1-4 PNMI 0.365 / 0.358 / 0.349 / 0.348.

* ``librispeech`` — HuBERT BASE iteration 1 as fairseq's
  ``examples/hubert/config/pretrain/hubert_base_librispeech.yaml``: wav2vec 2.0 BASE encoder
  (12 x 768 post-LN), raw waveforms (``normalize: false``), K = 100 MFCC units, mask probability
  0.8 / span 10, final_dim 256, logit temperature 0.1, masked frames only, feature penalty 10,
  feature_grad_mult 0.1, dropout 0.1 (input, blocks, attention), Adam (0.9, 0.98) lr 5e-4, weight
  decay 0.01, gradient clipping 10, 32k warm-up of 250k updates (the paper's first iteration).
  fairseq's batch is at most 1.4M samples a GPU x 32 GPUs (2,800 s of audio); here 192 random
  15.6 s windows (3,000 s). Data: LibriSpeech 960 h as 16 kHz .wav (``ffmpeg -i x.flac -ar 16000
  -ac 1 x.wav``). The MFCC units are made once, before training (k-means of 4,000 training files;
  the method could fit them itself, but every process and every reader would read the files)::

      python -m ssl_jax.eval.hubert_units --config=configs/hubert.py:librispeech \\
          --config.data.path=gs://BUCKET/librispeech_wav --units=mfcc \\
          --out=gs://BUCKET/hubert_units_it1.npz
      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \\
          --config=configs/hubert.py:librispeech --config.data.path=gs://BUCKET/librispeech_wav \\
          --config.method.units_path=gs://BUCKET/hubert_units_it1.npz \\
          --workdir=gs://BUCKET/hubert_it1

* ``librispeech_it2`` — HuBERT BASE iteration 2: K = 500 units of block 6 of the iteration-1
  model (k-means of 1,000 files' frames in mini-batches of 10,000), 400k updates, otherwise as
  ``librispeech``::

      python -m ssl_jax.eval.hubert_units --config=configs/hubert.py:librispeech_it2 \\
          --config.data.path=gs://BUCKET/librispeech_wav --units=layer \\
          --workdir=gs://BUCKET/hubert_it1 --layer=6 --out=gs://BUCKET/hubert_units_it2.npz
      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \\
          --config=configs/hubert.py:librispeech_it2 \\
          --config.data.path=gs://BUCKET/librispeech_wav \\
          --config.method.units_path=gs://BUCKET/hubert_units_it2.npz \\
          --workdir=gs://BUCKET/hubert_it2

Not reproduced from fairseq: layer drop (0.05), Adam's epsilon 1e-6 (optax's 1e-8) and the
polynomial (linear) lr decay (cosine here).
"""
from configs import _common as common
from ssl_jax import config as config_lib

VARIANTS = "'builtin', 'builtin_it2', 'librispeech' or 'librispeech_it2'"


def get_config(arg: str = 'builtin'):
  variant, _, backbone = arg.partition(',')
  c = config_lib.base_config()
  c.method.name = 'hubert'
  m = c.method
  common.speech_pretraining(c, mask_prob=0.8)
  m.units = 'mfcc'
  m.num_units = 100
  m.units_path = ''
  m.kmeans_max_clips = 4000
  m.kmeans_iters = 100
  m.kmeans_batch_size = 0        # full-batch Lloyd
  m.final_dim = 256
  m.logit_temp = 0.1
  m.masked_weight = 1.0
  m.unmasked_weight = 0.0
  m.feature_pen_weight = 10.0
  c.model.feature_grad_mult = 0.1
  c.model.audio_normalize = False   # BASE reads raw waveforms

  if variant in ('builtin', 'builtin_it2'):
    common.speech_data(c, batch_size=32)
    c.model.backbone = 'audio_tiny'
    c.model.audio_normalize = True
    m.final_dim = 64
    c.optim.lr = 1e-3
    common.schedule(c, steps=1500, warmup_steps=100, checkpoint_every=250)
    if variant == 'builtin_it2':
      m.units = 'layer'
  elif variant in ('librispeech', 'librispeech_it2'):
    common.speech_folder_data(c, batch_size=192, clip_samples=250_000)
    c.model.backbone = 'wav2vec2_base'
    c.model.dropout = 0.1
    c.model.attention_dropout = 0.1
    c.model.dropout_input = 0.1
    c.optim.clip_grad_norm = 10.0
    common.schedule(c, steps=250_000, warmup_steps=32_000, checkpoint_every=2000)
    if variant == 'librispeech_it2':
      m.units = 'layer'
      m.num_units = 500
      m.kmeans_max_clips = 1000
      m.kmeans_batch_size = 10_000
      m.kmeans_iters = 1000
      c.train.steps = 400_000
  else:
    raise common.unknown_variant('hubert', variant, VARIANTS)
  common.speech_backbone(c, 'hubert', arg, backbone)   # ',<speech encoder>'
  return c
