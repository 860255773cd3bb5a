"""InfoMin sweep: InfoNCE between views vs downstream kNN accuracy as the views change.

    python benchmarks/infomin_sweep.py [--distances 0,4,8,12,16,20] [--steps 150] \
        [--png infomin_sweep.png] [--out infomin_sweep.json]

For each patch distance d, a small CNN is trained with InfoNCE on pairs of 16 px patches of the
built-in MNIST-5k images whose centres are d pixels apart; the table lists the held-out InfoNCE
estimate of I(v1; v2) (nats; at most log 128 = 4.85) and the kNN top-1 of the encoder on centre
patches. InfoMin (Tian et al. 2020) predicts an inverted U: too-close views share nuisance
information (high I_NCE), too-distant views share too little (low I_NCE), the sweet spot is between.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from ssl_jax import infomin  # pylint: disable=wrong-import-position
from ssl_jax.data import sources  # pylint: disable=wrong-import-position


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--dataset', default='mnist5k')
  p.add_argument('--distances', default='0,4,8,12,16,20')
  p.add_argument('--size', type=int, default=16)
  p.add_argument('--steps', type=int, default=150)
  p.add_argument('--batch', type=int, default=128)
  p.add_argument('--png', default='infomin_sweep.png')
  p.add_argument('--out', default='')
  args = p.parse_args()
  tr, te = sources.builtin_source(args.dataset, 'train'), sources.builtin_source(args.dataset, 'test')
  t0 = time.time()
  rows = infomin.sweep(tr.images, tr.labels, te.images, te.labels,
                       [float(d) for d in args.distances.split(',')], size=args.size,
                       steps=args.steps, batch=args.batch)
  # The same encoder untrained (0 steps): the reference the trained ones must beat.
  untrained = infomin.run_setting(tr.images, tr.labels, te.images, te.labels, distance=0.0,
                                  size=args.size, steps=0, batch=args.batch)
  print('| patch distance (px) | I_NCE estimate (nats) | kNN top-1 |')
  print('|---|---|---|')
  for r in rows:
    print(f"| {r['distance']:g} | {r['info_nce']:.3f} | {r['knn_top1']:.3f} |")
  print(f"| untrained encoder | - | {untrained['knn_top1']:.3f} |")
  print(f'wall {time.time() - t0:.0f} s; plot -> {args.png}')
  infomin.plot(rows, args.png, random_knn=untrained['knn_top1'])
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'rows': rows, 'untrained': untrained}, f, indent=2)


if __name__ == '__main__':
  main()
