"""ResNet-18/50: shapes, torchvision-style names, stems, BatchNorm statistics."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models import resnet


@pytest.mark.parametrize('ctor,expansion', [(resnet.resnet18, 1), (resnet.resnet50, 4)])
@pytest.mark.parametrize('cifar_stem,size', [(True, 16), (False, 32)])
def test_shapes_and_names(ctor, expansion, cifar_stem, size):
  model = ctor(width=4, cifar_stem=cifar_stem)
  x = jnp.ones((2, size, size, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  out = model.apply(variables, x)
  assert out.shape == (2, 4 * 8 * expansion) == (2, model.feature_dim)
  params = variables['params']
  assert {'conv1', 'bn1', 'layer1_0', 'layer4_0'} <= set(params)
  assert 'downsample_0' in params['layer2_0'] and 'downsample_1' in params['layer2_0']
  stem_kernel = params['conv1']['kernel'].shape
  assert stem_kernel == ((3, 3, 3, 4) if cifar_stem else (7, 7, 3, 4))
  n_blocks = sum(1 for k in params if k.startswith('layer'))
  assert n_blocks == (8 if ctor is resnet.resnet18 else 16)


def test_resnet18_parameter_count_matches_torchvision():
  # torchvision resnet18 without the fc layer has 11,176,512 parameters (BN affine included).
  model = resnet.resnet18()
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((1, 224, 224, 3)))
  count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(variables['params']))
  assert count == 11_176_512


def test_batchnorm_train_updates_stats_eval_uses_them():
  model = resnet.resnet18(width=4, cifar_stem=True)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3)) * 3 + 1
  v = model.init(jax.random.PRNGKey(0), x)
  _, upd = model.apply(v, x, train=True, mutable=['batch_stats'])
  before = v['batch_stats']['bn1']['mean']
  after = upd['batch_stats']['bn1']['mean']
  assert not np.allclose(before, after)
  # Eval mode is deterministic and independent of the other batch members.
  a = model.apply(v, x)
  b = model.apply(v, x[:1])
  np.testing.assert_allclose(a[:1], b, rtol=1e-5, atol=1e-6)


def test_batchnorm_variance_two_pass():
  """A channel whose mean is large next to its spread (Dense after ReLU + pooling): the batch
  variance as E[x^2] - E[x]^2 (flax's default) cancels to noise here; ours is E[(x - E[x])^2]."""
  from ssl_jax.models.norm import BatchNorm  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = jnp.asarray(300.0 + 0.05 * rng.normal(size=(64, 3)), jnp.float32)
  bn = BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  v = bn.init(jax.random.PRNGKey(0), x)
  y, upd = bn.apply(v, x, mutable=['batch_stats'])
  want_var = np.var(np.asarray(x, np.float64), axis=0)
  np.testing.assert_allclose(upd['batch_stats']['var'], 0.9 + 0.1 * want_var, rtol=1e-6)
  np.testing.assert_allclose(np.std(np.asarray(y, np.float64), axis=0),
                             np.sqrt(want_var / (want_var + 1e-5)), rtol=1e-3)
  # Every BatchNorm of the ResNet is this one.
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm):
      seen.append(context.module.use_fast_variance)
    return next_fun(*args, **kwargs)

  model = resnet.resnet18(width=4, cifar_stem=True)
  with nn.intercept_methods(record):
    model.init(jax.random.PRNGKey(0), jnp.ones((2, 8, 8, 3)), train=True)
  assert len(seen) == 1 + 8 * 2 + 3 and not any(seen), seen   # stem, 8 blocks, 3 shortcuts


# The ResNet-50 (bottlenecks, 7x7 stem) repeats the ResNet-18's impls: full tier.
@pytest.mark.parametrize('ctor,cifar_stem,size', [
    (resnet.resnet18, True, 16), pytest.param(resnet.resnet50, False, 32, marks=pytest.mark.slow)])
def test_conv_impls_same_outputs_and_gradients(ctor, cifar_stem, size):
  """im2col matmuls (model.conv_impl 'im2col') and Winograd F(2x2, 3x3) for the 3x3 stride-1
  ones ('winograd'; 'auto' on CPU mixes both) compute the same network as XLA's convolutions:
  3x3/7x7/1x1, strides 1 and 2, maps down to 1x1; forward and gradients."""
  x = jax.random.normal(jax.random.PRNGKey(1), (4, size, size, 3))
  models = {impl: ctor(width=4, cifar_stem=cifar_stem, conv_impl=impl) for impl in resnet.CONV_IMPLS}
  v = models['xla'].init(jax.random.PRNGKey(0), x)
  results = {}
  for impl, model in models.items():
    def loss(params, x, model=model):
      return jnp.sum(jnp.sin(model.apply({**v, 'params': params}, x)))   # eval-mode BN
    jaxpr = str(jax.make_jaxpr(loss)(v['params'], x))
    results[impl] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(v['params'], x), jaxpr
  assert 'conv_general_dilated' in results['xla'][1]
  assert 'conv_general_dilated' not in results['im2col'][1]
  assert 'conv_general_dilated' not in results['winograd'][1]
  assert 'custom_vjp_call' in results['winograd'][1]           # the 3x3 stride-1 ones
  if jax.default_backend() == 'cpu':
    assert 'conv_general_dilated' not in results['auto'][1]
  (ref_val, ref_grad), _ = results['xla']
  for impl in ('im2col', 'auto', 'winograd'):
    (val, grad), _ = results[impl]
    np.testing.assert_allclose(val, ref_val, rtol=1e-4)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max()), grad, ref_grad)
