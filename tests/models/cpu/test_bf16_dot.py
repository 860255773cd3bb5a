"""bf16-operand Dense matmuls (ssl_jax.models.cpu.bf16_dot, ``model.cpu_dots='bf16'``): the
transposes, the custom gradient against its formula, what XLA:CPU compiles, and the ViT with it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import config as config_lib, models, runtime
from ssl_jax.models import vit
from ssl_jax.models.cpu import bf16_dot


def _bf16(a):
  """float64 copy of ``a`` rounded to bfloat16 (what the matmul operands become)."""
  return np.asarray(jnp.asarray(a, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32),
                    np.float64)


@pytest.mark.parametrize('shape', [(5, 3), (1, 7), (64, 192)])
def test_transpose_is_exact(shape):
  a = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  np.testing.assert_array_equal(np.asarray(jax.jit(bf16_dot.transpose_2d)(a)), np.asarray(a).T)


def test_value_and_gradients_are_the_formulas_on_bf16_operands():
  """y = x w with x, w rounded to bf16, accumulated in float32; for L = sum(c * y):
  dL/dx = c w^T and dL/dw = x^T c, with c and the residuals x, w rounded to bf16."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(37, 24)).astype(np.float32)
  w = rng.normal(size=(24, 11)).astype(np.float32)
  c = rng.normal(size=(37, 11)).astype(np.float32)
  y = jax.jit(bf16_dot.bf16_matmul)(x, w)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y), _bf16(x) @ _bf16(w), rtol=1e-5, atol=1e-5)
  dx, dw = jax.jit(jax.grad(lambda x, w: jnp.sum(c * bf16_dot.bf16_matmul(x, w)), (0, 1)))(x, w)
  assert dx.dtype == dw.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(dx), _bf16(c) @ _bf16(w).T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(dw), _bf16(x).T @ _bf16(c), rtol=1e-5, atol=1e-5)


def test_dense_contraction_only():
  x, w = jnp.ones((2, 3, 4)), jnp.ones((4, 5))
  assert bf16_dot.dot_general(x, w, (((2,), (0,)), ((), ()))).shape == (2, 3, 5)
  with pytest.raises(ValueError, match='only the Dense contraction'):
    bf16_dot.dot_general(x, jnp.ones((5, 4)), (((2,), (1,)), ((), ())))


def _dot_operand_dtypes(hlo: str) -> list[str]:
  """Operand element types of every dot in an optimised HLO module's text."""
  shapes = {}
  out = []
  for line in hlo.splitlines():
    line = line.strip()
    if '=' not in line:
      continue
    name, rest = line.split('=', 1)
    name = name.replace('ROOT', '').strip().lstrip('%')
    shapes[name] = rest.strip().split('[')[0]
    if ' dot(' in rest:
      args = rest.split(' dot(', 1)[1].split(')', 1)[0].split(',')
      out.append(tuple(shapes.get(a.strip().lstrip('%'), '?') for a in args[:2]))
  return out


def test_xla_cpu_keeps_all_three_matmuls_in_bf16():
  """The reason for the module: XLA:CPU's operand upcaster turns a dot with a transposed bf16
  operand into a float32 dot. Forward, kernel and input gradient must each see bf16 operands
  (plain ``jnp.dot`` on transposed operands fails this)."""
  x, w = jnp.ones((64, 32), jnp.float32), jnp.ones((32, 48), jnp.float32)

  def grads(matmul):
    f = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.tanh(matmul(x, w))), (0, 1)))
    return _dot_operand_dtypes(f.lower(x, w).compile().as_text())

  ours = grads(bf16_dot.bf16_matmul)
  assert len(ours) == 3 and all(d == ('bf16', 'bf16') for d in ours), ours
  naive = grads(lambda x, w: jnp.dot(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                                     preferred_element_type=jnp.float32))
  assert any(d != ('bf16', 'bf16') for d in naive), naive   # the upcast this module avoids


def test_vit_with_bf16_dots_same_parameters_close_outputs_and_gradients():
  cfg = config_lib.base_config().model
  cfg.backbone, cfg.img_size, cfg.patch_size = 'vit_tiny', 16, 4
  cfg.embed_dim, cfg.depth, cfg.num_heads = 32, 2, 2
  ref = models.build_backbone(cfg)
  cfg.cpu_dots = 'bf16'
  config_lib._choice(cfg.cpu_dots, 'model.cpu_dots', config_lib.CPU_DOTS)  # pylint: disable=protected-access
  bf = models.build_backbone(cfg)
  assert isinstance(bf, vit.ViT) and bf.bf16_dots and not ref.bf16_dots
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 16, 3))
  params = ref.init(jax.random.PRNGKey(1), x)
  assert (jax.tree_util.tree_structure(bf.init(jax.random.PRNGKey(1), x))
          == jax.tree_util.tree_structure(params))
  loss = lambda m: jax.jit(jax.value_and_grad(lambda p: jnp.sum(jnp.sin(m.apply(p, x)))))
  (l0, g0), (l1, g1) = loss(ref)(params), loss(bf)(params)
  assert l0 != l1   # the bf16 path is taken
  scale = float(jnp.sum(jnp.abs(ref.apply(params, x))))
  assert abs(float(l0 - l1)) < 2e-2 * scale
  for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
    assert float(jnp.linalg.norm(a - b)) <= 3e-2 * float(jnp.linalg.norm(a)) + 1e-6


def test_bf16_keeps_xlas_ynnpack_dots():
  """'bf16' needs XLA's YNNPACK fusions (the bf16 fast path); only 'eigen' / ViT 'auto' turn them
  off."""
  c = config_lib.base_config()
  c.model.backbone, c.model.cpu_dots = 'vit_tiny', 'bf16'
  assert runtime.cpu_dots_xla_flags(c, '') is None
  c.model.cpu_dots = 'auto'
  assert runtime.EIGEN_DOTS_FLAG in runtime.cpu_dots_xla_flags(c, '')
