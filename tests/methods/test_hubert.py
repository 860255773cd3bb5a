"""HuBERT (methods/speech/hubert.py, hubert_units.py): the on-device MFCC against numpy, the
frame labels the loss computes against numpy k-means assignment, the loss against the formula,
the cached MFCC k-means, the units file, and two iterations end to end (iteration 1 trains, its
layer is clustered by the units command's functions, iteration 2 trains on that file).

A tiny encoder (conv 16, D = 32, 2 blocks) on a 3-voice spoken_digits set, 0.5 s clips (24
frames), K = 8; the speech cache (the set, the cached centroids) is a temporary directory."""
from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import hubert as hubert_config
from ssl_jax import losses, methods, models
from ssl_jax.data import audio as audio_lib
from ssl_jax.data import kmeans, speech
from ssl_jax.eval import hubert_units as units_command
from ssl_jax.methods.speech import hubert_units
from ssl_jax.train import experiment, loop
from ssl_jax.train.state import TrainState
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K = 8
STEPS = 2


def tiny(variant: str = 'builtin'):
  c = helpers.tiny_audio(hubert_config.get_config(variant), 8, STEPS)   # 30 training clips
  c.method.num_units = K
  c.method.final_dim = 16
  c.method.mask_span = 4
  return c


@pytest.fixture(scope='module', autouse=True)
def cache(tmp_path_factory):
  """The speech cache (tiny set, cached centroids) in a temporary directory."""
  path = str(tmp_path_factory.mktemp('speech_cache'))
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv('SSL_JAX_CACHE', path)
    yield path


@pytest.fixture(scope='module')
def train_set(cache):
  return speech.load_speech_set('spoken_digits', 'train',
                                config=speech.speech_set_config(tiny().data))


@pytest.fixture(scope='module')
def iteration1(tmp_path_factory, cache):
  """Iteration 1 trained for STEPS steps: (workdir, summary)."""
  workdir = str(tmp_path_factory.mktemp('hubert_it1'))
  return workdir, loop.train_and_evaluate(tiny(), workdir)


def fresh_state(config):
  exp = experiment.Experiment(config, '/tmp/unused')
  state = exp.initial_state()
  return exp.method, TrainState.create(params=state.params, tx=exp.tx, buffers=state.buffers)


def batch_of(train_set, n=8, samples=8000):
  audio = train_set['audio'][:n, 4000:4000 + samples]
  return {'audio': audio, 'label': train_set['label'][:n], 'index': np.arange(n)}


def test_mfcc_jax_matches_numpy(train_set):
  clips = train_set['audio'][:12]
  ref = speech.mfcc(clips)                                  # float64 inside, float32 out
  got = np.asarray(jax.jit(speech.mfcc_jax)(clips))
  assert got.shape == ref.shape == (12, 49, 39)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=3e-4)
  # A clip whose last frame ends at its last sample, one clip, chunks.
  short = clips[:3, :8080]           # 25 frames, the last ending at sample 8080
  np.testing.assert_allclose(speech.mfcc_jax(short), speech.mfcc(short), rtol=1e-4, atol=3e-4)
  np.testing.assert_allclose(speech.mfcc_jax(short[0]), speech.mfcc(short[0]), rtol=1e-4,
                             atol=3e-4)
  np.testing.assert_allclose(speech.mfcc_jax(short, chunk=2), speech.mfcc(short), rtol=1e-4,
                             atol=3e-4)
  assert speech.mfcc_jax(short, deltas=False).shape == (3, 25, 13)


def test_labels_in_the_loss_are_numpy_kmeans_assignments(train_set):
  method, state = fresh_state(tiny())
  views = jax.jit(method.views)(batch_of(train_set), jax.random.PRNGKey(0))
  raw = np.asarray(views['audio_raw'])
  np.testing.assert_array_equal(raw, batch_of(train_set)['audio'])   # the clip, not standardised
  np.testing.assert_allclose(views['audio'], audio_lib.standardize(raw), rtol=1e-5, atol=1e-5)
  labels = np.asarray(jax.jit(method.frame_labels)(state.buffers['units'], views['audio_raw']))
  centroids = np.asarray(state.buffers['units']['centroids'])
  want = kmeans.assign(speech.mfcc(raw).reshape(-1, 39), centroids).reshape(labels.shape)
  assert labels.shape == (8, 24) and labels.dtype == np.int32
  # float32 MFCCs vs the float64 reference could move a frame on a cluster border; none does.
  np.testing.assert_array_equal(labels, want)
  assert len(np.unique(want)) >= 4


def test_loss_is_the_hubert_formula(train_set):
  method, state = fresh_state(tiny())
  views = jax.jit(method.views)(batch_of(train_set), jax.random.PRNGKey(1))
  rng = jax.random.PRNGKey(2)
  loss, (metrics, buffers) = jax.jit(method.loss)(state.params, state, views, rng)
  p = state.params

  @jax.jit
  def forward(p, views):   # the encoder's outputs, the same mask, mask token and rng
    enc = method.backbone.apply({'params': p['backbone']}, views['audio'], train=True,
                                mask=views['mask'], mask_token=p['mask_emb'],
                                method=type(method.backbone).encode, rngs={'dropout': rng})
    return enc['conv'], method.final_proj.apply({'params': p['final_proj']}, enc['frames'])

  conv, proj = forward(p, views)
  proj = np.asarray(proj, np.float64)
  labels = np.asarray(jax.jit(method.frame_labels)(state.buffers['units'], views['audio_raw']))
  mask = np.asarray(views['mask'])
  e = np.asarray(p['label_embs'], np.float64)
  cos = (proj / np.linalg.norm(proj, axis=-1, keepdims=True)) @ (
      e / np.linalg.norm(e, axis=-1, keepdims=True)).T
  logits = cos / 0.1
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
  pen = np.mean(np.asarray(conv, np.float64) ** 2)
  assert 0.2 < mask.mean() < 0.8
  np.testing.assert_allclose(metrics['loss_masked'], nll[mask].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics['feature_pen'], pen, rtol=1e-5)
  np.testing.assert_allclose(loss, nll[mask].mean() + 10.0 * pen, rtol=1e-5)
  correct = np.argmax(logits, -1) == labels
  np.testing.assert_allclose(metrics['correct_masked'], correct[mask].mean(), atol=1e-6)
  counts = np.bincount(labels.ravel(), minlength=K) / labels.size
  nz = counts[counts > 0]
  np.testing.assert_allclose(metrics['label_entropy'], -(nz * np.log(nz)).sum(), rtol=1e-5)
  np.testing.assert_allclose(metrics['label_usage'], (counts > 0).mean())
  jax.tree_util.tree_map(np.testing.assert_array_equal, buffers, state.buffers)   # unchanged


def test_hubert_loss_on_given_logits():
  """losses.hubert_loss, the method's objective, on hand-made logits (masked frames only)."""
  rng = np.random.default_rng(0)
  o, e = rng.normal(size=(2, 5, 6)), rng.normal(size=(4, 6))
  labels = np.array([[0, 1, 2, 3, 0], [3, 3, 2, 1, 0]])
  mask = np.array([[1, 1, 0, 0, 1], [0, 1, 1, 0, 0]], bool)
  logits = np.asarray(losses.hubert_logits(jnp.asarray(o), jnp.asarray(e), 0.1), np.float64)
  cos = np.einsum('btd,kd->btk', o / np.linalg.norm(o, axis=-1, keepdims=True),
                  e / np.linalg.norm(e, axis=-1, keepdims=True))
  np.testing.assert_allclose(logits, cos / 0.1, rtol=1e-5)
  loss, _ = losses.hubert_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))
  terms = [np.log(np.exp(logits[b, t]).sum()) - logits[b, t, labels[b, t]]
           for b in range(2) for t in range(5) if mask[b, t]]
  np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-5)


def test_mfcc_centroids_are_deterministic_cached_and_reused(cache, monkeypatch):
  c = tiny()
  path = hubert_units.mfcc_cache_path(c, K, 0)
  assert os.path.dirname(path) == cache
  method = methods.build_method(c)                 # fits (or finds) the cached k-means
  assert os.path.exists(path)
  centroids = np.asarray(method.units_buffers()['centroids'])
  assert centroids.shape == (K, 39)
  fitted, pnmi = hubert_units.mfcc_units(c, K, 0)   # a fresh fit: the same numbers
  np.testing.assert_array_equal(fitted, centroids)
  assert 0.0 < pnmi < 1.0

  def no_fit(*args):
    raise AssertionError('fitted the k-means again')

  monkeypatch.setattr(hubert_units, 'mfcc_units', no_fit)
  again = methods.build_method(tiny())
  np.testing.assert_array_equal(again.units_spec['centroids'], centroids)
  # Another seed or K is another file (and would be fitted).
  other = tiny()
  other.seed = 1
  assert hubert_units.mfcc_cache_path(other, K, 1) != path
  assert hubert_units.mfcc_cache_path(c, K + 1, 0) != path
  with pytest.raises(AssertionError, match='fitted'):
    methods.build_method(other)


def test_units_file_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  centroids = rng.normal(size=(K, 39)).astype(np.float32)
  p = hubert_units.save_units(str(tmp_path / 'm.npz'), centroids, 'mfcc', pnmi=0.25)
  u = hubert_units.load_units(p)
  np.testing.assert_array_equal(u['centroids'], centroids)
  assert (u['source'], u['layer'], u['num_units'], u['pnmi']) == ('mfcc', 0, K, 0.25)
  params = {'layers_0': {'fc1': {'kernel': rng.normal(size=(3, 4)).astype(np.float32)}},
            'layer_norm': {'scale': np.ones(3, np.float32)}}
  p = hubert_units.save_units(str(tmp_path / 'l.npz'), centroids[:, :3], 'layer', layer=1,
                              encoder_params=params, model_config={'backbone': 'audio_tiny'},
                              audio_normalize=True)
  u = hubert_units.load_units(p)
  assert (u['source'], u['layer'], u['audio_normalize']) == ('layer', 1, True)
  assert u['model_config'] == {'backbone': 'audio_tiny'} and np.isnan(u['pnmi'])
  np.testing.assert_array_equal(u['encoder']['layers_0']['fc1']['kernel'],
                                params['layers_0']['fc1']['kernel'])
  shapes = hubert_units.load_units(p, arrays=False)
  assert shapes['centroids'].shape == (K, 3)
  assert shapes['encoder']['layers_0']['fc1']['kernel'].shape == (3, 4)
  assert shapes['encoder']['layer_norm']['scale'].dtype == np.float32


def test_missing_or_mismatched_units_file_stops_clearly(tmp_path):
  c = tiny('builtin_it2')
  with pytest.raises(ValueError, match=r'config.method.units_path is empty.*hubert_units'):
    methods.build_method(c)
  c.method.units_path = str(tmp_path / 'missing.npz')
  with pytest.raises(ValueError, match=r'config.method.units_path=.*missing.npz.* does not exist'):
    methods.build_method(c)
  p = hubert_units.save_units(str(tmp_path / 'm.npz'), np.zeros((K, 39)), 'mfcc')
  c.method.units_path = p
  with pytest.raises(ValueError, match=r"units='layer' but .* holds 'mfcc'"):
    methods.build_method(c)
  c = tiny()
  c.method.units_path = p
  c.method.num_units = K + 2
  with pytest.raises(ValueError, match=f'num_units={K + 2} but .* holds {K} units'):
    methods.build_method(c)


def test_iteration_one_trains(iteration1):
  _, summary = iteration1
  assert summary['steps_run'] == STEPS and summary['skipped_updates'] == 0
  # log K + the feature penalty: a plausible start, finite.
  assert np.log(K) - 1 < summary['final_loss'] < np.log(K) + 5


def test_layer_units_then_iteration_two_trains(iteration1, train_set, tmp_path):
  workdir, _ = iteration1
  c = tiny()
  u = units_command.layer_units(c, workdir, 1, K, 0)
  assert u['centroids'].shape == (K, 32) and u['layer'] == 1 and u['audio_normalize']
  assert 0.0 < u['pnmi'] < 1.0
  path = hubert_units.save_units(str(tmp_path / 'u2.npz'), u['centroids'], 'layer', layer=1,
                                 encoder_params=u['encoder_params'],
                                 model_config=u['model_config'],
                                 audio_normalize=u['audio_normalize'], pnmi=u['pnmi'])
  # The centroids are the k-means of the restored encoder's block-1 frames of the training clips.
  run = experiment.Experiment.for_reading(c, workdir)
  params = jax.device_get(run.restore_for_reading().params['backbone'])
  np.testing.assert_array_equal(u['encoder_params']['layers_1']['fc1']['kernel'],
                                params['layers_1']['fc1']['kernel'])
  c2 = tiny('builtin_it2')
  c2.method.units_path = path
  method, state = fresh_state(c2)
  units = state.buffers['units']
  assert set(units['encoder']) == set(params) - {'layers_1'}   # cut after block 1
  views = jax.jit(method.views)(batch_of(train_set), jax.random.PRNGKey(0))
  labels = np.asarray(jax.jit(method.frame_labels)(units, views['audio_raw']))
  # Against the whole restored encoder (not the cut one) on the standardised clips.
  full = models.build_backbone(ml_collections.ConfigDict(u['model_config']))
  feats = jax.jit(lambda p, x: full.apply({'params': p}, audio_lib.standardize(x),
                                          method=type(full).encode)['layers'][0])(
                                              params, views['audio_raw'])
  want = kmeans.assign(np.asarray(feats).reshape(-1, 32), u['centroids']).reshape(labels.shape)
  np.testing.assert_array_equal(labels, want)
  assert len(np.unique(want)) >= 3
  # Two steps of iteration 2 from the file; the frozen encoder is never updated.
  summary = loop.train_and_evaluate(c2, str(tmp_path / 'it2'))
  assert summary['steps_run'] == STEPS and summary['skipped_updates'] == 0
  trained = experiment.Experiment.for_reading(c2, str(tmp_path / 'it2')).restore_for_reading()
  frozen = {'centroids': u['centroids'],
            'encoder': hubert_units.truncate_params(u['encoder_params'], 1)}
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         jax.device_get(trained.buffers['units']), frozen)


def test_one_and_eight_devices_agree():
  """Labels, loss and unit statistics of the batch split over 8 devices: the first step's metrics
  equal one device's to float noise."""
  _, hist1 = helpers.run_steps(tiny(), 1, STEPS)
  _, hist8 = helpers.run_steps(tiny(), 8, STEPS)
  for key in hist1[0]:
    np.testing.assert_allclose(hist8[0][key], hist1[0][key], rtol=2e-4, atol=1e-5, err_msg=key)
  assert all(np.isfinite(h['loss']) for h in hist1 + hist8)


def test_units_command_writes_mfcc_units(tmp_path):
  out = str(tmp_path / 'units.npz')
  proc = subprocess.run(
      [sys.executable, '-m', 'ssl_jax.eval.hubert_units',
       '--config=configs/hubert.py:builtin', '--config.data.name=spoken_digits',
       '--config.method.kmeans_max_clips=40', '--units=mfcc', f'--num_units={K}',
       f'--out={out}'], cwd=ROOT, capture_output=True, text=True, check=False,
      env={k: v for k, v in os.environ.items() if k != 'SSL_JAX_CACHE'})   # the shared set cache
  assert proc.returncode == 0, proc.stderr[-3000:]
  u = hubert_units.load_units(out)
  assert u['centroids'].shape == (K, 39) and u['source'] == 'mfcc' and 0 < u['pnmi'] < 1
  assert f'"pnmi": {round(u["pnmi"], 4)}' in proc.stdout
  bad = subprocess.run(
      [sys.executable, '-m', 'ssl_jax.eval.hubert_units',
       '--config=configs/hubert.py:builtin', '--units=layer', f'--out={out}'],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert bad.returncode == 1 and '--units=layer needs --workdir' in bad.stderr
