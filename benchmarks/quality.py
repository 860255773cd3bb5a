"""Learning-quality benchmark: short pretraining on the built-in set, kNN vs a random encoder.

    python benchmarks/quality.py configs/simclr.py:builtin [configs/byol.py:builtin ...] \
        [--set train.steps=200 ...] [--out results.json]

Prints one table row per config: method, backbone, steps, first and last logged loss, kNN top-1 of
the trained and of the randomly initialised encoder, and the ratio of their kNN errors (the
acceptance bar is <= 0.667), plus wall time and images/s; for DINO and iBOT also the collapse
check (teacher entropy strictly between 0 and log K, batch-marginal entropy high).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))



from ssl_jax.train import loop  # pylint: disable=wrong-import-position


def load_config(spec: str):
  path, _, arg = spec.partition(':')
  import importlib.util  # pylint: disable=g-import-not-at-top
  mod_spec = importlib.util.spec_from_file_location('cfg', path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config(arg) if arg else mod.get_config()


def apply_overrides(config, overrides):
  for item in overrides:
    key, _, value = item.partition('=')
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    old = node[leaf]
    if isinstance(old, bool):
      if value not in ('True', 'False'):
        raise ValueError(f'--set {item}: {key} is a bool, give True or False')
      node[leaf] = value == 'True'
    elif isinstance(old, (tuple, list)):
      node[leaf] = eval(value)  # pylint: disable=eval-used
    else:
      node[leaf] = type(old)(value)
  return config


def collapse_check(metrics, out_dim, low=0.1, high=0.95):
  """Self-distillation health from the last step's teacher metrics (DINO, iBOT): the mean
  per-image teacher entropy must lie strictly between 0 (one-hot collapse) and log K (uniform
  collapse), and the entropy of the batch-mean distribution must stay high (all images on one
  prototype is the other collapse). Returns None for methods without these metrics."""
  if 'teacher_entropy' not in metrics or not out_dim:
    return None
  log_k = math.log(out_dim)
  h = metrics['teacher_entropy']
  marginal = metrics.get('teacher_marginal_entropy', log_k)
  if h >= high * log_k:
    verdict = 'uniform collapse'
  elif h <= low * log_k or marginal <= low * log_k:
    verdict = 'one-hot collapse'
  else:
    verdict = 'no collapse'
  return {'entropy': h, 'marginal_entropy': marginal, 'log_k': log_k, 'verdict': verdict}


@contextlib.contextmanager
def _workdir(keep: str, spec: str, n: int):
  if not keep:
    with tempfile.TemporaryDirectory() as d:
      yield d
    return
  name = os.path.basename(spec).replace('.py', '').replace(':', '_').replace(',', '_')
  d = os.path.join(keep, f'{name}_{n}')
  if os.path.exists(d):
    raise FileExistsError(f'--keep: {d} exists; pick another directory')
  os.makedirs(d)
  yield d


def speech_metrics(config, workdir) -> dict:
  """Frame phone probe and PNMI (eval/speech.py) of the trained and of the random encoder."""
  from ssl_jax.eval import speech as speech_eval  # pylint: disable=g-import-not-at-top
  from ssl_jax.train import experiment  # pylint: disable=g-import-not-at-top
  exp = experiment.Experiment.for_reading(config, workdir)
  out = {'trained': speech_eval.evaluate(exp.method, exp.restore_for_reading().params, config),
         'random': speech_eval.evaluate(exp.method, exp.initial_state().params, config)}
  print(f'speech metrics: {json.dumps(out)}', flush=True)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('configs', nargs='+', help='path.py[:variant]')
  parser.add_argument('--set', action='append', default=[], help='field=value override')
  parser.add_argument('--out', default='', help='also write the rows as JSON here')
  parser.add_argument('--keep', default='', help='keep each run (checkpoints, history.json) in '
                      'KEEP/<config>_<n> instead of a temporary directory')
  args = parser.parse_args()
  rows = []
  for n, spec in enumerate(args.configs):
    config = apply_overrides(load_config(spec), args.set)
    config.train.progress_bar = False
    with _workdir(args.keep, spec, n) as workdir:
      t0 = time.time()
      summary = loop.train_and_evaluate(config, workdir)
      with open(os.path.join(workdir, 'history.json')) as f:
        history = [h for h in json.load(f) if 'loss' in h]
      if config.data.get('modality', 'image') == 'audio':
        summary['speech'] = speech_metrics(config, workdir)
    summary.update(config=spec, wall_s=time.time() - t0, first_loss=history[0]['loss'],
                   last_loss=history[-1]['loss'])
    # Method-specific health metrics of the last logged step (e.g. DINO's teacher entropy).
    summary['last_metrics'] = {k: v for k, v in history[-1].items()
                               if k not in ('step', 'loss', 'lr', 'images_per_sec')}
    check = collapse_check(summary['last_metrics'], config.method.get('out_dim'))
    if check:
      summary['collapse_check'] = check
    rows.append(summary)
    print(f"{spec}: {json.dumps(summary)}", flush=True)
  header = ('config', 'method', 'backbone', 'steps', 'loss first->last', 'kNN top-1',
            'kNN random', 'err ratio', 'img/s', 'wall s')
  print('| ' + ' | '.join(header) + ' |')
  print('|' + '---|' * len(header))
  for r in rows:
    ratio = r.get('knn_error_ratio')
    print(f"| {r['config']} | {r['method']} | {r['backbone']} | {r['steps']} | "
          f"{r['first_loss']:.3f} -> {r['last_loss']:.3f} | {r['knn_top1']:.3f} | "
          f"{r['knn_top1_random_init']:.3f} | {ratio:.2f} | {r['images_per_sec']:.0f} | "
          f"{r['wall_s']:.0f} |")
  speech_rows = [r for r in rows if 'speech' in r and 'phone_probe_top1' in r['speech']['trained']]
  if speech_rows:
    print('\n| config | phone probe (random) | best-layer PNMI (random) | MFCC PNMI |')
    print('|---|---|---|---|')
    for r in speech_rows:
      t, z = r['speech']['trained'], r['speech']['random']
      print(f"| {r['config']} | {t['phone_probe_top1']:.3f} ({z['phone_probe_top1']:.3f}) | "
            f"{t['pnmi_best']:.3f} ({z['pnmi_best']:.3f}) | {t['pnmi_mfcc']:.3f} |")
  checks = [r for r in rows if 'collapse_check' in r]
  if checks:
    print('\n| config | teacher entropy | marginal entropy | log K | verdict |')
    print('|---|---|---|---|---|')
    for r in checks:
      c = r['collapse_check']
      print(f"| {r['config']} | {c['entropy']:.2f} | {c['marginal_entropy']:.2f} | "
            f"{c['log_k']:.2f} | {c['verdict']} |")
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  main()
