"""data2vec-audio and wav2vec 2.0 (issue 34): targets, teacher, loss composition, 1 vs 8 devices,
and the seam (audio batches through the generic step, kNN on audio features)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import data2vec_audio as d2va_config
from configs import wav2vec2 as w2v2_config
from ssl_jax import methods
from ssl_jax.data import speech
from ssl_jax.train import experiment
from tests import helpers

STEPS = 3


def d2va(batch_size=8):
  c = helpers.tiny_audio(d2va_config.get_config('builtin'), batch_size, STEPS)
  c.method.top_k = 2
  c.method.mask_span = 4
  return c


def w2v2(batch_size=8):
  c = helpers.tiny_audio(w2v2_config.get_config('builtin'), batch_size, STEPS)
  c.method.mask_span = 4
  c.method.final_dim = 16
  c.method.num_vars = 8
  c.method.num_negatives = 5
  return c


def _instance_norm(x, eps=1e-5):
  mu = x.mean(axis=1, keepdims=True)
  return (x - mu) / np.sqrt(x.var(axis=1, keepdims=True) + eps)


def _state_and_views(config, seed=0):
  method = methods.build_method(config)
  batch = experiment.sample_batch(method, config.data.batch_size)
  batch['audio'] = np.random.default_rng(seed).normal(size=batch['audio'].shape).astype(np.float32)
  tx, _ = method.build_optimizer(10)
  state = experiment.create_train_state(method, tx, jax.random.PRNGKey(seed), batch)
  views = method.views(batch, jax.random.PRNGKey(seed + 1))
  return method, state, views


def test_data2vec_audio_targets_are_top_k_instance_normed_ffn_outputs_of_the_teacher():
  method, state, views = _state_and_views(d2va())
  teacher = state.buffers['teacher']
  # The teacher holds the transformer only; the feature encoder is the student's.
  assert set(teacher['params']['backbone']) == set(method.backbone.transformer_keys())
  assert 'feature_extractor' in state.params['backbone']
  # Make teacher differ from student so a wrong mix is seen.
  teacher = jax.tree_util.tree_map(lambda x: x * 1.1, teacher)
  got = np.asarray(method.targets(state.params, teacher, views['audio']))
  mixed = dict(state.params['backbone'], **teacher['params']['backbone'])
  out = method.backbone.apply({'params': mixed}, views['audio'],
                              method=type(method.backbone).encode)
  ffn = [np.asarray(f) for f in out['ffn']]
  want = sum(_instance_norm(f) for f in ffn[-2:]) / 2
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # Not the block outputs, not the top-1 layer alone.
  assert not np.allclose(got, sum(_instance_norm(np.asarray(f)) for f in out['layers'][-2:]) / 2,
                         atol=1e-2)


def test_data2vec_audio_loss_is_the_masked_frame_l2_over_sqrt_d():
  method, state, views = _state_and_views(d2va())
  loss, (metrics, _) = method.loss(state.params, state, views, jax.random.PRNGKey(3))
  target = np.asarray(method.targets(state.params, state.buffers['teacher'], views['audio']))
  enc = method.backbone.apply({'params': state.params['backbone']}, views['audio'],
                              mask=views['mask'], mask_token=state.params['mask_emb'],
                              method=type(method.backbone).encode)
  pred = np.asarray(method.head.apply({'params': state.params['final_proj']}, enc['frames']))
  mask = np.asarray(views['mask'])
  per_frame = ((pred - target) ** 2).sum(-1) / np.sqrt(pred.shape[-1])
  np.testing.assert_allclose(float(loss), per_frame[mask].mean(), rtol=1e-4)
  assert 0.2 < float(metrics['mask_ratio']) < 0.8


def test_data2vec_audio_ema_moves_only_the_transformer():
  method, state, _ = _state_and_views(d2va())
  bumped = jax.tree_util.tree_map(lambda x: x + 1.0, state.params)
  new = method.after_update(state.replace(params=bumped, step=state.step + 1))
  mom = float(method.momentum_fn(0))
  for key, old in state.buffers['teacher']['params']['backbone'].items():
    jax.tree_util.tree_map(
        lambda o, n: np.testing.assert_allclose(np.asarray(n), np.asarray(o) + (1 - mom),
                                                rtol=1e-5, atol=1e-6),
        old, new.buffers['teacher']['params']['backbone'][key])


def test_wav2vec2_loss_is_contrastive_plus_weighted_diversity_and_feature_penalty():
  method, state, views = _state_and_views(w2v2())
  loss, (m, _) = method.loss(state.params, state, views, jax.random.PRNGKey(3))
  want = m['contrastive'] + 0.1 * m['diversity'] + 10.0 * m['feature_pen']
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)
  # At init the positive is one of 1 + K candidates: the loss is near log(1 + K).
  assert abs(float(m['contrastive']) - np.log(1 + 5)) < 1.0
  assert float(m['gumbel_temperature']) == pytest.approx(2.0)
  np.testing.assert_allclose(float(m['diversity']),
                             (16 - float(m['prob_perplexity'])) / 16, rtol=1e-5)


def test_wav2vec2_targets_ignore_the_mask_token():
  """The quantiser reads the unmasked conv features: the mask embedding changes the context, not
  the targets (the contrastive loss changes only through the context)."""
  method, state, views = _state_and_views(w2v2())
  enc = lambda p: method.backbone.apply({'params': p['backbone']}, views['audio'],
                                        mask=views['mask'], mask_token=p['mask_emb'],
                                        method=type(method.backbone).encode)
  other = dict(state.params, mask_emb=state.params['mask_emb'] + 5.0)
  a, b = enc(state.params), enc(other)
  np.testing.assert_array_equal(np.asarray(a['features']), np.asarray(b['features']))
  assert not np.allclose(np.asarray(a['frames']), np.asarray(b['frames']))


@pytest.mark.parametrize('make', [d2va, w2v2], ids=['data2vec_audio', 'wav2vec2'])
def test_speech_methods_equal_on_1_and_8_devices(make):
  state1, hist1 = helpers.run_steps(make(), 1, STEPS)
  state8, hist8 = helpers.run_steps(make(), 8, STEPS)
  # The first step is the same to float noise; later ones drift apart chaotically.
  for key in hist1[0]:
    np.testing.assert_allclose(hist8[0][key], hist1[0][key], rtol=2e-4, atol=1e-5, err_msg=key)
  assert all(np.isfinite(h['loss']) for h in hist1 + hist8)
  del state1, state8


def test_audio_run_evaluates_with_knn_on_the_eval_view():
  """The seam end to end: the trainer's kNN reads audio eval views of both splits."""
  c = d2va()
  exp = helpers.loop.Experiment(c, helpers.tempfile.mkdtemp(), helpers.mesh(1))
  state = exp.initial_state()
  acc = exp.knn_eval(state)
  n_test = len(speech.speech_source('spoken_digits', 'test', speech.SpeechSetConfig(
      name='spoken_digits', num_train_speakers=3, num_test_speakers=2)))
  assert 0.0 <= acc <= 1.0 and n_test == 20
  metrics = exp.monitor(state)
  assert metrics['rankme'] > 1.0


def test_modality_mismatch_is_refused_with_the_fix():
  c = d2va()
  c.data.modality = 'image'
  with pytest.raises(ValueError, match=r"reads audio but config.data.modality='image'"):
    methods.build_method(c)
  c = d2va()
  c.model.backbone = 'vit_tiny'
  with pytest.raises(ValueError, match='is not an audio encoder'):
    methods.build_method(c)


def test_speech_eval_scores_phonetic_frames_high_and_random_frames_low():
  from ssl_jax.eval import speech as speech_eval
  rng = np.random.default_rng(0)
  phones = rng.integers(0, 5, 3000)
  frames = np.eye(5)[phones] * 3 + 0.05 * rng.normal(size=(3000, 5))
  noise = rng.normal(size=(3000, 5))
  assert speech_eval.frame_pnmi(frames, frames, phones, 5) > 0.95
  assert speech_eval.frame_pnmi(noise, noise, phones, 5) < 0.05
  assert speech_eval.frame_probe(frames, phones, frames, phones, 5) > 0.95
  assert speech_eval.frame_probe(noise, phones, noise, phones, 5) < 0.4


def test_speech_eval_runs_on_a_tiny_set_and_skips_unlabelled_folders():
  from ssl_jax.eval import speech as speech_eval
  c = d2va()
  c.data.clip_samples = 16000
  method, state, _ = _state_and_views(c)
  out = speech_eval.evaluate(method, state.params, c)
  assert set(out) >= {'pnmi_layer1', 'pnmi_layer2', 'pnmi_best', 'pnmi_mfcc', 'phone_probe_top1'}
  assert 0 < out['pnmi_mfcc'] < 1 and 0 < out['phone_probe_top1'] <= 1
  c.data.clip_samples = 8000
  assert 'speech_eval_skipped' in speech_eval.evaluate(method, state.params, c)
  c.data.source = 'folder'
  assert 'no frame phone labels' in speech_eval.evaluate(method, state.params, c)[
      'speech_eval_skipped']
