"""Input-pipeline benchmark: does the host keep the accelerator fed?

    python benchmarks/input_pipeline.py [--workers 0,1,2] [--n_images 2000] [--batch 256]
        [--only builtin,jpeg224,jpeg32] [--step_batch 0] [--out results.json]

For each data set it prints the images/s of

* the host pipeline (grain: decode, two SimCLR random-resized crops + flip, batch), with 0, 1, 2
  worker processes;
* the on-device augmentation (``augment_batch`` with the 'simclr' recipe, jitted, both views);
* a SimCLR ResNet-18 train step (``configs/simclr.py``) at the same crop size, fed from memory;

and the ratio of the best host rate to the step's rate (the bar is >= 3). Data sets:

* ``builtin`` — the built-in MNIST-5k, 24-px crops; the step is ``configs/simclr.py:builtin``
  (ResNet-18 width 16, batch 256);
* ``jpeg224`` — a temporary folder of ``--n_images`` 224x224 JPEGs, 224-px crops; ResNet-18 (width
  64, ImageNet stem);
* ``jpeg32`` — the same with 32x32 JPEGs and 32-px crops; ResNet-18 with the CIFAR stem.

One "image" is one source image (it yields two views). The step runs at ``--step_batch`` (0: the
global batch, except on CPU at >= 128 px where 16 keeps memory and time sane; images/s of a
ResNet step barely depends on the batch once it fills the device).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from PIL import Image  # pylint: disable=wrong-import-position

from configs import simclr  # pylint: disable=wrong-import-position
from ssl_jax.data import augment, pipeline, sources  # pylint: disable=wrong-import-position
from ssl_jax.train import experiment, sharding, step as step_lib  # pylint: disable=wrong-import-position


def make_jpeg_folder(root: str, n: int, size: int, seed: int = 0) -> str:
  """``n`` photo-like JPEGs (smooth colour fields + fine noise, quality 90) in 10 class folders."""
  rng = np.random.default_rng(seed)
  for i in range(n):
    d = os.path.join(root, 'train', f'class{i % 10}')
    os.makedirs(d, exist_ok=True)
    low = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize(
        (size, size), Image.BICUBIC)
    img = np.clip(np.asarray(low, np.int16) + rng.integers(-12, 13, (size, size, 3)), 0, 255)
    Image.fromarray(img.astype(np.uint8)).save(os.path.join(d, f'{i:05d}.jpg'), quality=90)
  return root


def host_rate(source, size: int, batch: int, workers: int, batches: int) -> float:
  specs = [pipeline.CropSpec(f'view{i}', size, (0.08, 1.0)) for i in range(2)]
  ds = pipeline.train_dataset(source, specs, global_batch=batch, seed=0)
  it = pipeline.make_iterator(ds, num_workers=workers, prefetch=2)
  next(it)  # start-up (worker processes) excluded
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  rate = batches * batch / (time.perf_counter() - t)
  it.close()
  return rate


def device_aug_rate(size: int, batch: int, reps: int = 3) -> float:
  fn = jax.jit(lambda k, x: augment.augment_batch(k, x, 'simclr'))
  x = jax.device_put(np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), np.uint8))
  key = jax.random.PRNGKey(0)
  fn(key, x).block_until_ready()
  t = time.perf_counter()
  for i in range(2 * reps):  # two views per image
    out = fn(jax.random.fold_in(key, i), x)
  out.block_until_ready()
  return reps * batch / (time.perf_counter() - t)


def step_config(kind: str, size: int, batch: int):
  c = simclr.get_config('builtin')
  if kind != 'builtin':
    c.model.width = 64
    c.model.cifar_stem = size < 64
  c.data.image_size = size
  c.data.batch_size = batch
  c.train.final_eval = False
  c.train.progress_bar = False
  c.train.steps = 1000
  return c


def step_rate(kind: str, size: int, batch: int, steps: int) -> float:
  """Images/s of the jitted SimCLR train step, fed pre-cropped uint8 views from memory."""
  c = step_config(kind, size, batch)
  rng = np.random.default_rng(0)
  views = {f'view{i}': rng.integers(0, 256, (batch, size, size, 3), np.uint8) for i in range(2)}
  data = iter(lambda: dict(views, label=np.zeros(batch, np.int32)), None)
  workdir = tempfile.mkdtemp()
  try:
    exp = experiment.Experiment(c, workdir)
    step_fn = step_lib.jit_train_step(exp.method, c, exp.mesh, exp.state_sharding,
                                      exp.lr_schedule)
    state = exp.initial_state()
    train_input = pipeline.IterableInput(data, exp.method.crop_specs(), local_batch=batch,
                                         seed=c.seed)
    batch_arr = sharding.global_batch(exp.mesh, next(train_input))
    state, _ = step_fn(state, batch_arr)  # compile
    jax.block_until_ready(state.step)
    t = time.perf_counter()
    for _ in range(steps):
      state, _ = step_fn(state, batch_arr)
    jax.block_until_ready(state.step)
    return steps * batch / (time.perf_counter() - t)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workers', default='0,1,2')
  parser.add_argument('--n_images', type=int, default=2000)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--batches', type=int, default=4, help='timed host batches per setting')
  parser.add_argument('--only', default='builtin,jpeg224,jpeg32')
  parser.add_argument('--step_batch', type=int, default=0)
  parser.add_argument('--step_steps', type=int, default=2)
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  workers = [int(w) for w in args.workers.split(',')]
  platform = jax.devices()[0].platform
  print(f'# devices: {jax.device_count()} x {jax.devices()[0].device_kind} ({platform}); '
        f'host CPUs: {os.cpu_count()}; batch {args.batch}', flush=True)
  rows, tmp = [], tempfile.mkdtemp()
  try:
    for kind in args.only.split(','):
      if kind == 'builtin':
        size = 24
        source = sources.builtin_source('mnist5k', 'train')
      else:
        size = int(kind.replace('jpeg', ''))
        root = make_jpeg_folder(os.path.join(tmp, kind), args.n_images, size)
        cfg = step_config(kind, size, args.batch).data
        cfg.source, cfg.path = 'folder', root
        source = sources.get_source(cfg, 'train')
      host = {w: host_rate(source, size, args.batch, w, args.batches) for w in workers}
      print(f'  {kind}: host {host}', flush=True)
      aug = device_aug_rate(size, args.batch)
      sb = args.step_batch or (16 if platform == 'cpu' and size >= 128 else args.batch)
      step = step_rate(kind, size, sb, args.step_steps)
      rows.append(dict(data=kind, crop=size, host=host, device_aug=aug, step=step, step_batch=sb,
                       ratio=max(host.values()) / step))
      print(f'  {kind}: aug {aug:.0f}/s, step {step:.1f}/s', flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  head = ' | '.join(f'host {w}w' for w in workers)
  print(f'\n| data | crop | {head} | device aug | SimCLR R18 step (batch) | best host / step |')
  print('|' + '---|' * (len(workers) + 5))
  for r in rows:
    hosts = ' | '.join(f'{r["host"][w]:.0f}' for w in workers)
    print(f'| {r["data"]} | {r["crop"]} | {hosts} | {r["device_aug"]:.0f} | '
          f'{r["step"]:.1f} ({r["step_batch"]}) | {r["ratio"]:.1f}x |')
  print('(images/s; one image = two views; bar: best host / step >= 3)')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(rows, f, indent=1)


if __name__ == '__main__':
  main()
