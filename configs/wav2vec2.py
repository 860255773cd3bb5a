"""wav2vec 2.0 (Baevski et al. 2020): contrastive prediction, at span-masked 20 ms frames, of the
Gumbel-quantised conv latents among distractors from the same utterance
(``ssl_jax/methods/speech/wav2vec2.py``).

Variants (``--config=configs/wav2vec2.py:<variant>``):

* ``builtin`` — the CPU-sized ``audio_tiny`` encoder (7-layer conv at width 64, 4 x 128 post-LN
  blocks) on the built-in ``spoken_words`` set (espeak-ng voices with reverb, noise and a second
  word; test speakers unseen), 1 s clips (49 frames), batch 32::

      python -m ssl_jax.main --config=configs/wav2vec2.py:builtin --workdir=/tmp/w2v2_builtin

* ``librispeech`` — wav2vec 2.0 BASE as fairseq's
  ``examples/wav2vec/config/pretraining/wav2vec2_base_librispeech.yaml``: 12 x 768 post-LN,
  mask probability 0.65 / span 10, G=2 x V=320 codebook, final_dim 256, 100 distractors,
  kappa 0.1, diversity weight 0.1, feature penalty 10, feature_grad_mult 0.1, Gumbel temperature
  (2, 0.5, 0.999995), dropout 0.1 (input and features 0.1, attention 0.1), Adam (0.9, 0.98)
  lr 5e-4, weight decay 0.01, 32k of 400k updates warm-up, 1.4M samples a GPU x 64 GPUs (here
  batch 512 random 15.6 s windows, waveforms not normalised for BASE). Data: LibriSpeech 960 h
  as 16 kHz .wav (``ffmpeg -i x.flac -ar 16000 -ac 1 x.wav``)::

      launch/tpu_pod.sh --tpu=NAME -- python -m ssl_jax.main \\
          --config=configs/wav2vec2.py:librispeech --config.data.path=gs://BUCKET/librispeech_wav \\
          --workdir=gs://BUCKET/w2v2_ls960
"""
from configs import _common as common
from ssl_jax import config as config_lib


def get_config(arg: str = 'builtin'):
  variant, _, backbone = arg.partition(',')
  c = config_lib.base_config()
  c.method.name = 'wav2vec2'
  m = c.method
  common.speech_pretraining(c, mask_prob=0.65)
  m.final_dim = 256
  m.num_groups = 2
  m.num_vars = 320
  m.num_negatives = 100
  m.cross_sample_negatives = 0
  m.logit_temp = 0.1
  m.diversity_weight = 0.1
  m.feature_pen_weight = 10.0
  m.temp_start, m.temp_end, m.temp_decay = 2.0, 0.5, 0.999995
  c.model.feature_grad_mult = 0.1
  c.model.audio_normalize = False   # BASE reads raw waveforms (LARGE normalises)

  if variant == 'builtin':
    common.speech_data(c, batch_size=32)
    c.model.backbone = 'audio_tiny'
    c.model.audio_normalize = True
    m.final_dim = 64
    m.num_vars = 64
    m.num_negatives = 20           # of the ~20-25 masked frames of a 49-frame clip
    m.temp_decay = 0.999           # reaches 0.5 in ~1,400 of the run's updates
    c.optim.lr = 1e-3
    common.schedule(c, steps=1500, warmup_steps=100, checkpoint_every=250)
  elif variant == 'librispeech':
    common.speech_folder_data(c, batch_size=512, clip_samples=250_000)
    c.model.backbone = 'wav2vec2_base'
    c.model.dropout = 0.1
    c.model.attention_dropout = 0.1
    c.model.dropout_input = 0.1
    common.schedule(c, steps=400_000, warmup_steps=32_000, checkpoint_every=2000)
  else:
    raise common.unknown_variant('wav2vec2', variant, "'builtin' or 'librispeech'")
  common.speech_backbone(c, 'wav2vec2', arg, backbone)   # ',<speech encoder>'
  return c
