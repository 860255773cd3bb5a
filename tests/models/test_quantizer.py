"""models.quantizer: wav2vec 2.0's Gumbel product quantiser against hand-computed values."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.quantizer import GumbelVectorQuantizer, gumbel_softmax, gumbel_temperature


def test_gumbel_softmax_hard_is_exact_one_hot_of_noisy_argmax():
  key = jax.random.PRNGKey(0)
  logits = jax.random.normal(jax.random.PRNGKey(1), (6, 3, 10))
  hard = np.asarray(gumbel_softmax(key, logits, 0.7, hard=True))
  assert set(np.unique(hard).tolist()) == {0.0, 1.0}
  np.testing.assert_array_equal(hard.sum(-1), 1.0)
  # The forward pick is the Gumbel-max sample argmax(l + g), g drawn from the same key.
  g = jax.random.gumbel(key, logits.shape, jnp.float32)
  np.testing.assert_array_equal(hard.argmax(-1), np.asarray(jnp.argmax(logits + g, -1)))
  soft = np.asarray(gumbel_softmax(key, logits, 0.7, hard=False))
  np.testing.assert_allclose(soft, np.asarray(jax.nn.softmax((logits + g) / 0.7)), rtol=1e-6)


def test_straight_through_gradient_is_the_soft_gradient():
  key = jax.random.PRNGKey(0)
  logits = jax.random.normal(jax.random.PRNGKey(1), (4, 2, 5))
  w = jax.random.normal(jax.random.PRNGKey(2), (4, 2, 5))
  f = lambda hard: lambda l: jnp.sum(w * gumbel_softmax(key, l, 2.0, hard=hard))
  g_hard, g_soft = jax.grad(f(True))(logits), jax.grad(f(False))(logits)
  assert np.abs(np.asarray(g_hard)).min() > 0
  np.testing.assert_allclose(np.asarray(g_hard), np.asarray(g_soft), rtol=1e-6, atol=1e-7)


def test_gumbel_temperature_schedule():
  assert float(gumbel_temperature(0)) == 2.0
  np.testing.assert_allclose(float(gumbel_temperature(100_000)), 2.0 * 0.999995 ** 100_000,
                             rtol=1e-6)
  # 2 * 0.999995**s reaches 0.5 at s = ln 4 / -ln(0.999995) ~ 277,258 updates.
  assert float(gumbel_temperature(277_000)) > 0.5 and float(gumbel_temperature(278_000)) == 0.5
  assert float(gumbel_temperature(10 ** 7)) == 0.5
  assert float(jax.jit(gumbel_temperature)(jnp.int32(100_000))) == pytest.approx(1.21306, 1e-4)


def _set_logits(params, frame_logits):
  """Parameters whose weight_proj maps one-hot frame i to ``frame_logits[i]`` (T, G * V)."""
  p = jax.tree.map(lambda a: a, params)
  p['params']['weight_proj']['kernel'] = jnp.asarray(frame_logits, jnp.float32)
  p['params']['weight_proj']['bias'] = jnp.zeros(frame_logits.shape[1])
  return p


def _model_and_params(frame_logits, groups=2, num_vars=2, code_dim=4, **kw):
  t = frame_logits.shape[0]
  model = GumbelVectorQuantizer(num_groups=groups, num_vars=num_vars, code_dim=code_dim, **kw)
  x = jnp.eye(t)[None]                                  # (1, T, T): frame i selects row i
  params = model.init({'params': jax.random.PRNGKey(0)}, x)
  return model, _set_logits(params, np.asarray(frame_logits)), x


def test_perplexities_hand_computed():
  # G = 2, V = 2. Group 0 logits per frame: [2, 0], [1, 0], [0, 3]; group 1: all zero.
  logits = np.array([[2., 0., 0., 0.], [1., 0., 0., 0.], [0., 3., 0., 0.]])
  model, params, x = _model_and_params(logits)
  out = model.apply(params, x)
  # code perplexity: group 0 picks codes (0, 0, 1): exp(H(2/3, 1/3)); group 1 argmax of ties
  # is always code 0: exp(0) = 1.
  h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
  np.testing.assert_allclose(float(out['code_perplexity']), math.exp(h) + 1.0, rtol=1e-5)
  # prob perplexity: group 1's softmax is uniform (exp H = V = 2); group 0 averages the three
  # softmaxes.
  sm = lambda a, b: np.array([math.exp(a), math.exp(b)]) / (math.exp(a) + math.exp(b))
  p = (sm(2, 0) + sm(1, 0) + sm(0, 3)) / 3
  want = math.exp(-(p * np.log(p)).sum()) + 2.0
  np.testing.assert_allclose(float(out['prob_perplexity']), want, rtol=1e-5)
  assert out['num_vars'] == 4
  np.testing.assert_array_equal(np.asarray(out['codes'])[0], [[0, 0], [0, 0], [1, 0]])
  # Averaged over the masked frames only (wav2vec 2.0 quantises those): codes (0, 0) -> 1 + 1.
  masked = model.apply(params, x, mask=jnp.array([[True, True, False]]))
  np.testing.assert_allclose(float(masked['code_perplexity']), 2.0, rtol=1e-5)


def test_uniform_logits_give_full_prob_perplexity():
  model, params, x = _model_and_params(np.zeros((5, 2 * 8)), groups=2, num_vars=8)
  out = model.apply(params, x)
  np.testing.assert_allclose(float(out['prob_perplexity']), 16.0, rtol=1e-5)
  np.testing.assert_allclose(float(out['code_perplexity']), 2.0, rtol=1e-5)   # argmax: code 0


@pytest.mark.parametrize('combine_groups', [False, True])
def test_codes_index_the_returned_vectors(combine_groups):
  model = GumbelVectorQuantizer(num_groups=2, num_vars=16, code_dim=6,
                                combine_groups=combine_groups)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 5))
  params = model.init({'params': jax.random.PRNGKey(1)}, x)
  out = model.apply(params, x, 1.0, True, rngs={'gumbel': jax.random.PRNGKey(2)})
  codes = np.asarray(out['codes'])
  assert codes.shape == (2, 9, 2) and codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < 16
  table = np.asarray(params['params']['vars'])[0]
  assert table.shape == ((16 if combine_groups else 32), 3)
  offset = np.array([0, 0]) if combine_groups else np.array([0, 16])
  want = table[codes + offset].reshape(2, 9, 6)   # the two groups' entries, concatenated
  np.testing.assert_array_equal(np.asarray(out['quantized']), want)
  # Training draws Gumbel noise: another key picks other codes somewhere.
  other = model.apply(params, x, 1.0, True, rngs={'gumbel': jax.random.PRNGKey(3)})
  assert not np.array_equal(codes, np.asarray(other['codes']))


def test_eval_is_argmax_and_project_q():
  model = GumbelVectorQuantizer(num_groups=2, num_vars=32, code_dim=8, out_dim=5)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 6))
  params = model.init({'params': jax.random.PRNGKey(1)}, x)
  out = model.apply(params, x)                           # train=False: no rng needed
  w = params['params']['weight_proj']
  logits = (np.asarray(x) @ np.asarray(w['kernel']) + np.asarray(w['bias'])).reshape(3, 4, 2, 32)
  np.testing.assert_array_equal(np.asarray(out['codes']), logits.argmax(-1))
  assert out['quantized'].shape == (3, 4, 5)
  table = np.asarray(params['params']['vars'])[0]
  q = table[np.asarray(out['codes']) + np.array([0, 32])].reshape(3, 4, 8)
  p = params['params']['project_q']
  np.testing.assert_allclose(np.asarray(out['quantized']),
                             q @ np.asarray(p['kernel']) + np.asarray(p['bias']), rtol=1e-5,
                             atol=1e-6)


def test_training_gradient_reaches_logits_and_codebook():
  """The straight-through one-hot passes the soft gradient to weight_proj and the input; the
  codebook gets the gradient of the picked entries only."""
  model = GumbelVectorQuantizer(num_groups=2, num_vars=8, code_dim=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5))
  params = model.init({'params': jax.random.PRNGKey(1)}, x)
  w = jax.random.normal(jax.random.PRNGKey(4), (2, 3, 4))

  def loss(p, x):
    out = model.apply(p, x, 0.5, True, rngs={'gumbel': jax.random.PRNGKey(2)})
    return jnp.sum(w * out['quantized']) + out['prob_perplexity'], out['codes']

  (g_p, g_x), codes = jax.grad(loss, argnums=(0, 1), has_aux=True)(params, x)
  assert np.abs(np.asarray(g_x)).max() > 0
  assert np.abs(np.asarray(g_p['params']['weight_proj']['kernel'])).max() > 0
  g_vars = np.asarray(g_p['params']['vars'])[0]
  used = np.unique((np.asarray(codes) + np.array([0, 8])).ravel())
  assert np.all(np.abs(g_vars[used]).sum(-1) > 0)
  assert np.all(g_vars[np.setdiff1d(np.arange(16), used)] == 0)
