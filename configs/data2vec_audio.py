"""data2vec for speech (Baevski et al. 2022): the student regresses, at span-masked 20 ms frames,
the average of the EMA teacher's top-K instance-normalised FFN outputs on the unmasked waveform
(``ssl_jax/methods/speech/data2vec_audio.py``).

Variants (``--config=configs/data2vec_audio.py:<variant>``):

* ``builtin`` — a CPU-sized wav2vec 2.0 encoder (``audio_tiny``: the 7-layer conv feature
  encoder at width 64, a 4-block 128-d post-LN transformer) on the built-in ``spoken_words`` set
  (35 words spoken by espeak-ng voices, reverb, noise and a second word mixed in; test speakers
  unseen), 1 s clips, batch 32::

      python -m ssl_jax.main --config=configs/data2vec_audio.py:builtin --workdir=/tmp/d2v_audio

* ``librispeech`` — the official fairseq ``examples/data2vec/config/v1/base_librispeech.yaml``
  (``audio/pretraining/base_librispeech.yaml``): wav2vec 2.0 Base encoder (``wav2vec2_base``,
  post-LN, 12 x 768), standardised waveforms, mask probability 0.65 of spans of 10, top 8 of 12
  layers' FFN outputs, instance norm, L2 loss / sqrt(D), EMA 0.999 -> 0.9999 over 30k updates,
  Adam (0.9, 0.98) lr 5e-4, weight decay 0.01, 3% warm-up (12k of 400k updates), 250 s of audio a
  GPU x 16 GPUs (~63 h/epoch of LibriSpeech 960 h: about 250 clips of 16 s each per GPU; here
  batch 256 random 16 s windows). Data: LibriSpeech as 16 kHz .wav files in a folder (convert the
  FLAC with ``ffmpeg -i x.flac -ar 16000 -ac 1 x.wav``)::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \\
          --config=configs/data2vec_audio.py:librispeech --config.data.path=gs://BUCKET/librispeech_wav \\
          --workdir=gs://BUCKET/d2v_audio_ls960
"""
from configs import _common as common
from ssl_jax import config as config_lib


def get_config(arg: str = 'builtin'):
  variant, _, backbone = arg.partition(',')
  c = config_lib.base_config()
  c.method.name = 'data2vec_audio'
  m = c.method
  common.speech_pretraining(c, mask_prob=0.65)
  m.top_k = 8
  m.loss_beta = 0.0               # 0: L2
  m.target_layer_norm = 'instance'
  m.target_final_norm = 'none'
  m.momentum = 0.999
  m.momentum_final = 0.9999
  m.momentum_anneal_steps = 30_000
  c.model.audio_normalize = True

  if variant == 'builtin':
    common.speech_data(c, batch_size=32)
    c.model.backbone = 'audio_tiny'
    m.top_k = 4
    m.momentum = 0.99
    m.momentum_final = 0.999
    m.momentum_anneal_steps = 1000
    c.optim.lr = 1e-3
    common.schedule(c, steps=1500, warmup_steps=100, checkpoint_every=250)
  elif variant == 'librispeech':
    common.speech_folder_data(c, batch_size=256, clip_samples=16000 * 16)
    c.model.backbone = 'wav2vec2_base'
    common.schedule(c, steps=400_000, warmup_steps=12_000, checkpoint_every=2000)
  else:
    raise common.unknown_variant('data2vec_audio', variant, "'builtin' or 'librispeech'")
  common.speech_backbone(c, 'data2vec_audio', arg, backbone)   # ',<speech encoder>'
  return c
