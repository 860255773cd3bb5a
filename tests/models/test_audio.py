"""The wav2vec 2.0 / HuBERT / data2vec-audio encoder (models/audio.py): frame counts, the matmul
convolution against XLA's, the weight-normalised position convolution against a direct grouped
convolution, masking, post-LN / pre-LN blocks and their FFN outputs, presets and parameter
counts against fairseq / HuggingFace."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax import models
from ssl_jax.models import audio
from ssl_jax.models.audio import AudioEncoder, ConvFeatureEncoder, ConvPositionalEmbedding

# Seconds-to-compile sizes: the real 7 strides, 8 conv channels, 2 blocks of 16.
SMALL_CONV = tuple((8, k, s) for _, k, s in audio.CONV_LAYERS)
SMALL = dict(conv_layers=SMALL_CONV, embed_dim=16, depth=2, num_heads=2, pos_conv_kernel=4,
             pos_conv_groups=2)
CLIP = 3200   # (3200 - 400) // 320 + 1 = 9 frames


def _wave(batch, length, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, length)), jnp.float32)


def _layer_norm(x, p, eps=1e-5):
  x = np.asarray(x, np.float64)
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * np.asarray(p['scale']) + np.asarray(p['bias'])


def test_num_frames_formula_matches_the_encoder_output():
  # 400-sample receptive field, 320-sample hop: floor((L - 400) / 320) + 1 for every L >= 400.
  for length in range(400, 4000, 7):
    assert audio.conv_output_length(length) == (length - 400) // 320 + 1
  assert audio.conv_output_length(399) == 0
  assert AudioEncoder().num_frames(16000) == 49 and audio.audio_tiny().num_frames(16000) == 49
  enc = ConvFeatureEncoder(SMALL_CONV)
  for length, want in ((16000, 49), (12345, 38)):   # (12345 - 400) // 320 + 1 = 38
    x = _wave(1, length)
    out = enc.apply(enc.init(jax.random.key(0), x), x)
    assert enc.num_frames(length) == want and out.shape == (1, want, 8)
  with pytest.raises(ValueError, match='make no frame'):
    enc.init(jax.random.key(0), _wave(1, 399))


@pytest.mark.parametrize('k,s,cin', [(10, 5, 1), (3, 2, 6), (2, 2, 6), (4, 3, 5), (7, 3, 2),
                                     (2, 5, 3)])
def test_matmul_conv_equals_lax_conv(k, s, cin):
  x = jax.random.normal(jax.random.key(0), (2, 61, cin))
  w = jax.random.normal(jax.random.key(1), (k, cin, 7))
  got, want = audio.conv1d_matmul(x, w, s), audio.conv1d_xla(x, w, s)
  assert got.shape == want.shape == (2, (61 - k) // s + 1, 7)
  assert float(jnp.abs(got - want).max()) < 1e-5
  # The same through the gradient (the matmul's backward pass is slices, pads and matmuls).
  g1 = jax.grad(lambda x, w: jnp.sum(jnp.sin(audio.conv1d_matmul(x, w, s))), (0, 1))(x, w)
  g2 = jax.grad(lambda x, w: jnp.sum(jnp.sin(audio.conv1d_xla(x, w, s))), (0, 1))(x, w)
  for a, b in zip(g1, g2):
    assert float(jnp.abs(a - b).max()) < 1e-4


@pytest.mark.parametrize('mode', ['group_norm', 'layer_norm'])
def test_feature_encoder_norms_and_impls(mode):
  x = _wave(2, 1200)
  enc = ConvFeatureEncoder(SMALL_CONV, mode=mode, conv_bias=mode == 'layer_norm')
  v = enc.init(jax.random.key(0), x)
  out, state = enc.apply(v, x, capture_intermediates=True, mutable=['intermediates'])
  got = ConvFeatureEncoder(SMALL_CONV, mode=mode, conv_bias=mode == 'layer_norm',
                           conv_impl='im2col').apply(v, x)
  assert float(jnp.abs(got - out).max()) < 1e-5
  inter = state['intermediates']
  normed = [n for n in range(7) if 'layer_norm' in inter[f'conv_layers_{n}']]
  first = np.asarray(inter['conv_layers_0']['layer_norm']['__call__'][0], np.float64)
  if mode == 'group_norm':   # one group per channel, first layer only: each channel over time
    assert normed == [0]
    np.testing.assert_allclose(first.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(first.var(1), 1, atol=2e-3)
    assert 'bias' not in v['params']['conv_layers_0']['conv']
  else:                      # every layer, each frame over channels
    assert normed == list(range(7))
    np.testing.assert_allclose(first.mean(-1), 0, atol=1e-5)
    assert v['params']['conv_layers_3']['conv']['bias'].shape == (8,)


def _reference_pos_conv(x, v, g, bias, groups):
  """fairseq's pos_conv in numpy: w = g v / ||v|| (norm per kernel position), Conv1d padding k//2
  on both sides, SamePad (drop the last frame of an even kernel), GELU."""
  k, cin, d = v.shape
  w = v * (g.reshape(k, 1, 1) / np.sqrt((v ** 2).sum(axis=(1, 2), keepdims=True)))
  xp = np.pad(x, ((0, 0), (k // 2, k // 2), (0, 0)))
  t_out = xp.shape[1] - k + 1
  y = np.zeros((x.shape[0], t_out, d))
  cout = d // groups
  for gi in range(groups):
    xin = xp[:, :, gi * cin:(gi + 1) * cin]
    for j in range(k):
      y[:, :, gi * cout:(gi + 1) * cout] += xin[:, j:j + t_out] @ w[j, :, gi * cout:(gi + 1) * cout]
  if k % 2 == 0:
    y = y[:, :-1]
  return np.asarray(jax.nn.gelu(y + bias, approximate=False))


@pytest.mark.parametrize('impl', ['auto', 'im2col'])
@pytest.mark.parametrize('k,groups,t', [(4, 2, 9), (5, 4, 7), (16, 2, 6)])
def test_pos_conv_is_a_weight_normed_grouped_same_conv(impl, k, groups, t):
  d = 8
  x = np.random.default_rng(0).standard_normal((2, t, d))
  pc = ConvPositionalEmbedding(k, groups, conv_impl=impl)
  v = pc.init(jax.random.key(0), x)
  p = v['params']
  assert p['weight_v'].shape == (k, d // groups, d) and p['weight_g'].shape == (k, 1, 1)
  # torch's weight_norm starts with g = ||v||: the initial kernel is v itself.
  np.testing.assert_allclose(p['weight_g'].ravel(),
                             np.linalg.norm(np.asarray(p['weight_v']).reshape(k, -1), axis=1),
                             rtol=1e-6)
  rng = np.random.default_rng(1)
  p = {'weight_v': rng.standard_normal((k, d // groups, d)), 'weight_g': rng.uniform(
      0.5, 2, (k, 1, 1)), 'bias': rng.standard_normal(d)}
  out = pc.apply({'params': jax.tree_util.tree_map(jnp.float32, p)}, x)
  assert out.shape == x.shape                        # SamePad: as many frames out as in
  want = _reference_pos_conv(x, p['weight_v'], p['weight_g'], p['bias'], groups)
  assert float(np.abs(np.asarray(out) - want).max()) < 1e-5
  w = audio.weight_norm(p['weight_v'], p['weight_g'], (1, 2))   # each kernel slice has norm g
  np.testing.assert_allclose(np.linalg.norm(w.reshape(k, -1), axis=1), p['weight_g'].ravel(),
                             rtol=1e-6)


@pytest.fixture(scope='module')
def small_post_ln():
  model = AudioEncoder(**SMALL)
  x = _wave(2, CLIP)
  return model, model.init(jax.random.key(1), x), x


def test_mask_replaces_exactly_the_masked_projected_frames(small_post_ln):
  model, v, x = small_post_ln
  t = model.num_frames(CLIP)
  mask = np.zeros((2, t), bool)
  mask[0, [1, 4, 5]] = True
  mask[1, 8] = True
  token = jnp.arange(16, dtype=jnp.float32) / 10.0
  plain = model.apply(v, x, method=AudioEncoder.embed)
  masked = model.apply(v, x, method=AudioEncoder.embed, mask=jnp.asarray(mask), mask_token=token)
  x0, xm = plain['inputs'], masked['inputs']
  np.testing.assert_array_equal(masked['features'], plain['features'])   # the quantizer's input
  np.testing.assert_allclose(masked['features'], _layer_norm(masked['conv'], v['params'][
      'layer_norm']), atol=1e-5)                     # features = layer_norm(conv), unmasked
  np.testing.assert_array_equal(np.asarray(xm)[mask], np.broadcast_to(token, (4, 16)))
  np.testing.assert_array_equal(np.asarray(xm)[~mask], np.asarray(x0)[~mask])
  out = model.apply(v, x, method=AudioEncoder.encode, mask=jnp.asarray(mask), mask_token=token)
  assert not np.allclose(out['frames'], model.apply(v, x, method=AudioEncoder.encode)['frames'])
  with pytest.raises(ValueError, match='needs mask_token'):
    model.apply(v, x, method=AudioEncoder.encode, mask=jnp.asarray(mask))
  with pytest.raises(ValueError, match=r'mask must be \(B, T\)'):
    model.apply(v, x, method=AudioEncoder.encode, mask=jnp.asarray(mask[:, :4]), mask_token=token)


def _encode_with_intermediates(model, v, x):
  out, state = model.apply(v, x, method=AudioEncoder.encode, capture_intermediates=True,
                           mutable=['intermediates'])
  return out, state['intermediates']


def test_post_ln_blocks_and_their_ffn_outputs(small_post_ln):
  model, v, x = small_post_ln
  out, inter = _encode_with_intermediates(model, v, x)
  t = model.num_frames(CLIP)
  assert out['features'].shape == out['conv'].shape == (2, t, 8)
  assert out['frames'].shape == (2, t, 16)
  assert len(out['layers']) == len(out['ffn']) == 2
  np.testing.assert_array_equal(out['frames'], out['layers'][-1])   # no final norm post-LN
  for i in range(2):
    blk, p = inter[f'layers_{i}'], v['params'][f'layers_{i}']
    # (the library's Dense runs on the input flattened to 2-D; flax records that call)
    np.testing.assert_array_equal(out['ffn'][i], blk['fc2']['__call__'][0].reshape(2, -1, 16))
    # layers[i] = final_layer_norm(ffn input + ffn[i]): ffn is taken before the residual and norm
    res = blk['self_attn_layer_norm']['__call__'][0]
    want = _layer_norm(np.asarray(res) + np.asarray(out['ffn'][i]), p['final_layer_norm'])
    np.testing.assert_allclose(out['layers'][i], want, atol=1e-5)
  # post-LN: every block output is layer-normed (init scale 1, bias 0), the FFN output is not
  np.testing.assert_allclose(np.asarray(out['layers'][1]).std(-1), 1, atol=1e-3)
  assert np.abs(np.asarray(out['ffn'][1]).std(-1) - 1).max() > 0.1
  pooled = model.apply(v, x)
  np.testing.assert_allclose(pooled, np.asarray(out['frames']).mean(1), rtol=1e-6)
  assert model.feature_dim == 16
  # data2vec-audio's EMA teacher: the transformer's parameters, the rest is the student's
  assert set(model.transformer_keys()) == {'pos_conv', 'encoder_layer_norm', 'layers_0',
                                           'layers_1'}
  assert set(v['params']) - set(model.transformer_keys()) == {
      'feature_extractor', 'layer_norm', 'post_extract_proj'}


def test_pre_ln_blocks_and_final_norm():
  model = AudioEncoder(**SMALL, layer_norm_first=True)
  x = _wave(2, CLIP)
  v = model.init(jax.random.key(1), x)
  out, inter = _encode_with_intermediates(model, v, x)
  last = np.asarray(out['layers'][-1])
  np.testing.assert_allclose(out['frames'], _layer_norm(last, v['params']['encoder_layer_norm']),
                             atol=1e-5)
  assert np.abs(last.std(-1) - 1).max() > 0.05      # the residual stream itself is not normed
  # layers[1] = layers[0] + attn(LN(layers[0])) + ffn[1]
  attn = inter['layers_1']['self_attn']['__call__'][0]
  np.testing.assert_allclose(out['layers'][1], np.asarray(out['layers'][0]) + attn
                             + np.asarray(out['ffn'][1]), atol=1e-5)
  np.testing.assert_array_equal(out['ffn'][1],
                                inter['layers_1']['fc2']['__call__'][0].reshape(2, -1, 16))


def test_dropout_needs_train_and_an_rng(small_post_ln):
  _, v, x = small_post_ln
  model = AudioEncoder(**SMALL, dropout=0.3, attention_dropout=0.2, activation_dropout=0.1,
                       dropout_input=0.1)
  ref = model.apply(v, x)
  np.testing.assert_array_equal(model.apply(v, x, train=True), ref)   # no 'dropout' rng
  a = model.apply(v, x, train=True, rngs={'dropout': jax.random.key(0)})
  b = model.apply(v, x, train=True, rngs={'dropout': jax.random.key(1)})
  assert not np.allclose(a, ref) and not np.allclose(a, b)


def test_grad_multiply_scales_only_the_gradient(small_post_ln):
  x = jnp.arange(4.0)
  for scale in (0.1, 0.0, 1.0):
    np.testing.assert_array_equal(audio.grad_multiply(x, scale), x)
    g = jax.grad(lambda x: jnp.sum(audio.grad_multiply(x, scale) * 3.0))(x)
    np.testing.assert_allclose(g, np.full(4, 3.0 * scale), rtol=1e-6)
  # In the encoder (fairseq feature_grad_mult): only the conv feature encoder's gradient scales.
  _, v, wave = small_post_ln
  grads = [jax.grad(lambda p, m=AudioEncoder(**SMALL, feature_grad_mult=mult): jnp.sum(
      m.apply({'params': p}, wave) ** 2))(v['params']) for mult in (1.0, 0.1)]
  for key in grads[0]:
    scale = 0.1 if key == 'feature_extractor' else 1.0
    for a, b in zip(jax.tree_util.tree_leaves(grads[0][key]),
                    jax.tree_util.tree_leaves(grads[1][key])):
      np.testing.assert_allclose(b, scale * np.asarray(a), rtol=1e-4, atol=1e-7)


def _model_cfg(**kw):
  return ml_collections.ConfigDict(dict(kw))


def test_build_backbone_audio_tiny_params_and_forward():
  assert set(models.AUDIOS) <= set(models.BACKBONES)
  assert models.is_audio_backbone('audio_tiny') and not models.is_audio_backbone('vit_tiny')
  model = models.build_backbone(_model_cfg(backbone='audio_tiny'))
  x = _wave(2, 16000)
  v = jax.jit(model.init)(jax.random.key(0), x)
  n = sum(p.size for p in jax.tree_util.tree_leaves(v['params']))
  c, d, k, g = 64, 128, 32, 8
  conv = 10 * c + 2 * c + 4 * 3 * c * c + 2 * 2 * c * c       # kernels + the one GroupNorm
  block = 4 * (d * d + d) + 2 * d * 4 * d + 4 * d + d + 2 * 2 * d
  assert n == conv + 2 * c + (c * d + d) + (k * (d // g) * d + k + d) + 2 * d + 4 * block
  assert n == 933_792
  out = jax.jit(model.apply)(v, x)
  assert out.shape == (2, 128) and models.feature_dim(model) == 128
  assert np.isfinite(np.asarray(out)).all()


def test_build_backbone_overrides_and_errors():
  m = models.build_backbone(_model_cfg(
      backbone='wav2vec2_base', conv_dim=32, conv_mode='layer_norm', embed_dim=64, depth=3,
      num_heads=4, pos_conv_kernel=8, pos_conv_groups=4, layer_norm_first=True, dtype='bfloat16',
      conv_impl='xla', feature_grad_mult=0.1))
  assert m.conv_layers == tuple((32, k, s) for _, k, s in audio.CONV_LAYERS)
  assert (m.conv_mode, m.embed_dim, m.depth, m.num_heads, m.pos_conv_kernel, m.pos_conv_groups,
          m.layer_norm_first, m.dtype, m.conv_impl, m.feature_grad_mult) == (
              'layer_norm', 64, 3, 4, 8, 4, True, jnp.bfloat16, 'xla', 0.1)
  large = models.build_backbone(_model_cfg(backbone='wav2vec2_large', depth=0, conv_dim=0))
  assert (large.conv_mode, large.conv_bias, large.layer_norm_first, large.depth) == (
      'layer_norm', True, True, 24)
  with pytest.raises(ValueError, match='conv_mode'):
    models.build_backbone(_model_cfg(backbone='audio_tiny', conv_mode='batch_norm'))
  with pytest.raises(ValueError, match='conv_impl'):
    models.build_backbone(_model_cfg(backbone='audio_tiny', conv_impl='winograd'))
  with pytest.raises(ValueError, match='needs a ViT backbone'):
    models.build_backbone(_model_cfg(backbone='audio_tiny', num_registers=4))
  with pytest.raises(ValueError, match='built in'):
    models.register_backbone('wav2vec2_base', lambda cfg: None)


def _count(model):
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 16000),
                                                                              jnp.float32))
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(shapes))


def test_parameter_counts_match_fairseq_and_huggingface():
  # wav2vec2 BASE, by part: conv 5,120 + 4 x 786,432 + 2 x 524,288 + GroupNorm 1,024 = 4,200,448;
  # layer_norm 1,024; post_extract_proj 393,984; pos_conv weight_v 768 x 48 x 128 = 4,718,592,
  # weight_g 128, bias 768; encoder layer_norm 1,536; 12 blocks x 7,087,872 = 85,054,464.
  # HuggingFace's Wav2Vec2Model / HubertModel base count 94,371,712 (HubertModel reported as
  # 94371712 with last_hidden_state (1, 49, 768)) also holds masked_spec_embed (768), which is
  # the method's mask_token here: 94,371,712 - 768. fairseq's 95.0M adds the quantizer and the
  # projections. (The brief's 94,395,648 is 23,936 more than any split of these parts; no
  # component of this size exists in either implementation.)
  assert _count(audio.wav2vec2_base()) == 94_371_712 - 768
  # LARGE (LV-60k): conv bias and a LayerNorm after every conv, D=1024, 24 pre-LN blocks; the
  # same parts counted for D=1024 / 4096 (HuggingFace's wav2vec2-large-lv60 adds its 1,024
  # masked_spec_embed).
  conv = 5120 + 4 * 786_432 + 2 * 524_288 + 7 * 512 + 7 * 1024
  pos = 1024 * 64 * 128 + 128 + 1024
  block = 4 * (1024 * 1024 + 1024) + 2 * 1024 * 4096 + 4096 + 1024 + 2 * 2048
  assert _count(audio.wav2vec2_large()) == conv + 1024 + 512 * 1024 + 1024 + pos + 2048 + (
      24 * block) == 315_437_696
