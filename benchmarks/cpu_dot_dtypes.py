"""Matmul throughput on this CPU by operand / result dtype, and what XLA:CPU's fusion does to it
(issue 35: bf16 compute on CPUs with AVX512-BF16 / AMX).

    python benchmarks/cpu_dot_dtypes.py [--reps 20]

Part 1: GFLOP/s of one jitted ``jnp.dot`` per shape (a ViT-Tiny MLP's forward and its two gradient
matmuls at batch 64 x 65 tokens, and square ones) in float32, bf16 operands accumulated in float32
(``preferred_element_type=float32``) and bf16 throughout. Part 2: milliseconds of the ViT-Tiny MLP
forward shape written the ways a model would write it — with the bf16 cast or the GELU after the
dot, with an ``optimization_barrier`` between, and with a transposed operand (the gradients).
The table names the CPU; numbers are medians of ``--reps`` calls after one warm-up.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position

from ssl_jax import runtime  # pylint: disable=wrong-import-position

BF16, F32 = jnp.bfloat16, jnp.float32
# (M, K, N): the ViT-Tiny MLP at batch 64 x 65 tokens (fc1 forward, fc2 forward, fc1's kernel
# gradient), then square shapes.
SHAPES = ((4160, 192, 768), (4160, 768, 192), (192, 4160, 768), (512, 512, 512),
          (2048, 2048, 2048))


def median_ms(fn, *args, reps: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def dot_gflops(m, k, n, operand, result, reps):
  a, b = jnp.ones((m, k), operand), jnp.ones((k, n), operand)
  ms = median_ms(jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=result)), a, b,
                 reps=reps)
  return 2 * m * k * n / ms / 1e6


def fusion_rows(reps):
  """(label, ms) of the fc1 forward shape in the forms a model writes."""
  m, k, n = SHAPES[0]
  xb, wb, g = jnp.ones((m, k), BF16), jnp.ones((k, n), BF16), jnp.ones((m, n), BF16)
  acc = lambda a, b: jnp.dot(a, b, preferred_element_type=F32)
  barrier = jax.lax.optimization_barrier
  rows = [
      ('float32 dot', lambda a, b: jnp.dot(a, b), (xb.astype(F32), wb.astype(F32))),
      ('bf16 dot, float32 result', acc, (xb, wb)),
      ('... then cast to bf16 (fused)', lambda a, b: acc(a, b).astype(BF16), (xb, wb)),
      ('... barrier, then cast to bf16', lambda a, b: barrier(acc(a, b)).astype(BF16), (xb, wb)),
      ('... then GELU (fused)', lambda a, b: jax.nn.gelu(acc(a, b)), (xb, wb)),
      ('... barrier, then GELU', lambda a, b: jax.nn.gelu(barrier(acc(a, b))), (xb, wb)),
      ('kernel gradient x.T @ g (bf16, float32 result)', lambda a, b: acc(a.T, b), (xb, g)),
      ('input gradient g @ w.T (bf16, float32 result)', lambda a, b: acc(a, b.T), (g, wb)),
  ]
  return [(label, median_ms(jax.jit(fn), *args, reps=reps)) for label, fn, args in rows]


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--reps', type=int, default=20)
  args = p.parse_args()
  print(f'CPU: {runtime.cpu_description()}; jax {jax.__version__}\n')
  print('| M x K x N | float32 GFLOP/s | bf16 -> float32 | bf16 |')
  print('|---|---|---|---|')
  for m, k, n in SHAPES:
    cells = [dot_gflops(m, k, n, op, res, args.reps) for op, res in ((F32, F32), (BF16, F32),
                                                                      (BF16, BF16))]
    print(f'| {m} x {k} x {n} | ' + ' | '.join(f'{c:.0f}' for c in cells) + ' |')
  print(f'\n| {"x".join(map(str, SHAPES[0]))}, as a model writes it | ms |')
  print('|---|---|')
  for label, ms in fusion_rows(args.reps):
    print(f'| {label} | {ms:.2f} |')


if __name__ == '__main__':
  main()
