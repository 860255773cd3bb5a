"""A Dense layer's matmul with bfloat16 operands and float32 accumulation whose forward *and*
gradient matmuls all take XLA:CPU's fast bf16 path (YNNPACK; AMX / AVX512-BF16 CPUs).

XLA:CPU runs ``dot(a_bf16, b_bf16) -> f32`` through YNNPACK only when both operands are row-major
with the usual contraction (``a``'s last dimension with ``b``'s first). The gradients of
``y = x @ w`` are ``x.T @ g`` and ``g @ w.T``; XLA turns a transpose into a layout change, so those
operands arrive column-major, and its operand upcaster then converts them to float32 for a
generic dot: slower than float32 throughout (docs/performance.md, "bf16 matmuls on an AMX CPU").
Here the two transposes are gathers (a data movement XLA keeps row-major), so all three matmuls
are canonical. Measured on a 2-core Xeon with AMX-BF16, the ViT-Tiny MLP shape 4160 x 192 x 768:
forward 1.5 ms, kernel gradient 2.1 ms, input gradient 1.2 ms, against 4.8, 6.4 and 4.6 ms in
float32 (``benchmarks/cpu_dot_dtypes.py``).

Parameters, inputs and outputs stay float32; only the matmul operands are rounded to bf16 (8 bits
of mantissa), so results differ from float32 by bf16 rounding (relative ~1e-2 per product, less
after accumulation), as with any bf16 compute.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

BF16, F32 = jnp.bfloat16, jnp.float32


def transpose_2d(a: jax.Array) -> jax.Array:
  """``a.T`` materialised row-major (a gather with iota indices, not an XLA transpose)."""
  r, c = a.shape
  rows = jax.lax.broadcasted_iota(jnp.int32, (c, r), 1)
  cols = jax.lax.broadcasted_iota(jnp.int32, (c, r), 0)
  return jnp.take(a.reshape(-1), (rows * c + cols).reshape(-1), unique_indices=True,
                  mode='clip').reshape(c, r)


def _dot(a, b):
  return jnp.dot(a, b, preferred_element_type=F32)


@jax.custom_vjp
def bf16_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """``x @ w`` for 2-D ``x`` (M, K) and ``w`` (K, N): bf16 operands, float32 result."""
  return _dot(x.astype(BF16), w.astype(BF16))


def _fwd(x, w):
  xb, wb = x.astype(BF16), w.astype(BF16)
  return _dot(xb, wb), (xb, wb, jnp.zeros((), x.dtype), jnp.zeros((), w.dtype))


def _bwd(res, g):
  xb, wb, x_tag, w_tag = res   # zero-size tags carry the primal dtypes
  gb = g.astype(BF16)
  dx = _dot(gb, transpose_2d(wb))
  dw = _dot(transpose_2d(xb), gb)
  return dx.astype(x_tag.dtype), dw.astype(w_tag.dtype)


bf16_matmul.defvjp(_fwd, _bwd)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """A ``jax.lax.dot_general`` for ``nn.Dense(dot_general=...)``: the Dense contraction (``lhs``'s
  last axis with ``rhs``'s first, no batch axes) through :func:`bf16_matmul`; anything else is
  refused (the layers that use it are Dense layers)."""
  del precision, preferred_element_type
  (lc, rc), (lb, rb) = dimension_numbers
  if tuple(lc) != (lhs.ndim - 1,) or tuple(rc) != (0,) or lb or rb or rhs.ndim != 2:
    raise ValueError(f'bf16 dot: only the Dense contraction is supported, got {dimension_numbers}')
  lead = lhs.shape[:-1]
  y = bf16_matmul(lhs.reshape(-1, lhs.shape[-1]), rhs)
  return y.reshape(lead + (rhs.shape[1],))
