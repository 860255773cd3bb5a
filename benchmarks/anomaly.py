"""Anomaly-detection benchmark: short pretraining on the built-in set, then image-level AUROC of a
Gaussian density estimator on the trained and on a randomly initialised encoder.

    python benchmarks/anomaly.py configs/cutpaste.py:builtin [--set train.steps=200 ...]

The anomaly set is the built-in test split where every other image carries a synthetic defect
(scratch, hole, blob, noise; ``ssl_jax.eval.anomaly``) that no training augmentation produces.
Prints the kNN row of benchmarks/quality.py too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.quality import apply_overrides, load_config  # pylint: disable=wrong-import-position
from ssl_jax.eval import anomaly  # pylint: disable=wrong-import-position
from ssl_jax.train import experiment, loop  # pylint: disable=wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('config', help='path.py[:variant]')
  parser.add_argument('--set', action='append', default=[], help='field=value override')
  args = parser.parse_args()
  config = apply_overrides(load_config(args.config), args.set)
  config.train.progress_bar = False
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.time()
    summary = loop.train_and_evaluate(config, workdir)
    exp = experiment.Experiment.for_reading(config, workdir)   # read-only, as eval does
    trained = exp.restore_for_reading()
    aset = anomaly.builtin_anomaly_set(config.data)
    res = {'trained': anomaly.evaluate(exp, trained, aset),
           'random': anomaly.evaluate(exp, exp.initial_state(), aset)}
  summary.update(res, wall_s=time.time() - t0)
  print(json.dumps(summary), flush=True)
  cols = ['auroc'] + [f'auroc_{d}' for d in anomaly.DEFECTS]
  print('| config | encoder | ' + ' | '.join(cols) + ' | kNN top-1 |')
  print('|' + '---|' * (len(cols) + 3))
  for name, knn in (('trained', summary.get('knn_top1')),
                    ('random', summary.get('knn_top1_random_init'))):
    vals = ' | '.join(f'{res[name][k]:.3f}' for k in cols)
    print(f'| {args.config} | {name} | {vals} | {knn:.3f} |')


if __name__ == '__main__':
  main()
