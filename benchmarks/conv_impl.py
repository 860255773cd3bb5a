"""XLA convolutions vs im2col matmuls vs Winograd F(2x2, 3x3) (``model.conv_impl``) for every
distinct convolution shape of a CIFAR-stem ResNet-18: one jitted forward + backward (gradients of
input and kernel) each. Winograd applies to the 3x3 stride-1 shapes only (``-`` elsewhere).

    python benchmarks/conv_impl.py [--batch_size 64] [--reps 5]

Prints a table of median milliseconds per shape and the totals. Like ``throughput.py`` it
re-runs itself with glibc malloc on huge pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``; opt out
with ``SSL_JAX_HUGEPAGES=0``): without them the im2col column build alone ran ~3x slower here from
page faults.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position

from ssl_jax import runtime  # pylint: disable=wrong-import-position
from ssl_jax.models.cpu import conv as cpu_conv  # pylint: disable=wrong-import-position

# (map size, C_in, C_out, kernel, stride) of ResNet-18 with the CIFAR stem at 32 px.
SHAPES = ((32, 3, 64, 3, 1), (32, 64, 64, 3, 1), (32, 64, 128, 3, 2), (32, 64, 128, 1, 2),
          (16, 128, 128, 3, 1), (16, 128, 256, 3, 2), (8, 256, 256, 3, 1), (8, 256, 512, 3, 2),
          (4, 512, 512, 3, 1))
DIMS = ('NHWC', 'HWIO', 'NHWC')


def time_grad(impl: str, x, w, stride: int, reps: int) -> float:
  k = w.shape[0]
  conv = functools.partial(cpu_conv.conv_general_dilated, window_strides=(stride, stride),
                           padding=((k // 2, k // 2),) * 2, dimension_numbers=DIMS, impl=impl)
  grad = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))
  jax.block_until_ready(grad(x, w))
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(grad(x, w))
    times.append(time.perf_counter() - t0)
  return 1000 * statistics.median(times)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch_size', type=int, default=64)
  p.add_argument('--reps', type=int, default=5)
  args = p.parse_args()
  runtime.reexec_with_hugepages()
  print('| map | C_in -> C_out | kernel / stride | xla ms | im2col ms | winograd ms | xla / im2col '
        '| im2col / winograd |')
  print('|---|---|---|---|---|---|---|---|')
  total = {'xla': 0.0, 'im2col': 0.0, 'winograd': 0.0}
  for hw, cin, cout, k, s in SHAPES:
    x = jax.random.normal(jax.random.PRNGKey(0), (args.batch_size, hw, hw, cin))
    w = jax.random.normal(jax.random.PRNGKey(1), (k, k, cin, cout))
    impls = ('xla', 'im2col', 'winograd') if (k, s) == (3, 1) else ('xla', 'im2col')
    ms = {impl: time_grad(impl, x, w, s, args.reps) for impl in impls}
    ms.setdefault('winograd', ms['im2col'])      # what 'winograd' runs for the other shapes
    for impl in total:
      total[impl] += ms[impl]
    wino = f"{ms['winograd']:.1f}" if (k, s) == (3, 1) else '-'
    ratio = f"{ms['im2col'] / ms['winograd']:.2f}x" if (k, s) == (3, 1) else '-'
    print(f"| {hw}x{hw} | {cin} -> {cout} | {k}x{k} / {s} | {ms['xla']:.1f} | {ms['im2col']:.1f} "
          f"| {wino} | {ms['xla'] / ms['im2col']:.2f}x | {ratio} |", flush=True)
  print(f"| total | | | {total['xla']:.1f} | {total['im2col']:.1f} | {total['winograd']:.1f} | "
        f"{total['xla'] / total['im2col']:.2f}x | {total['im2col'] / total['winograd']:.2f}x |")
  print(f'\nbatch {args.batch_size}, forward + backward (input and kernel gradients), median of '
        f'{args.reps}; JAX {jax.__version__} ({jax.default_backend()}), {os.cpu_count()} CPUs; '
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}.")


if __name__ == '__main__':
  main()
