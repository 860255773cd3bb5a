"""Training-step throughput of MAE vs SimMIM (and optionally BEiT / MultiMAE) on the same ViT.

    python benchmarks/mim_throughput.py [--preset builtin|vit_b16] [--batch_size 128] [--steps 10]
        [--methods mae,simmim]

MAE's encoder runs on the 25 % visible patches only (+ [CLS]) and adds a light decoder; SimMIM's
encoder runs on every patch (mask tokens included) with a linear head. Both steps are the real
jitted train step of ``experiment.Experiment`` (augmentation, masking, loss, AdamW update) on one fixed
batch already on device, so the input pipeline is excluded; compilation is excluded too.
Presets: ``builtin`` = the configs' builtin ViT (96-d, depth 4, patch 4, 24 px: 36 patches);
``vit_b16`` = ViT-B/16 at 224 px (196 patches) with MAE's 512-d x 8 decoder (for an accelerator).
Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position

from benchmarks import quality  # pylint: disable=wrong-import-position
from ssl_jax.data import pipeline, sources  # pylint: disable=wrong-import-position
from ssl_jax.train import experiment, sharding, step as step_lib  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str):
  """``configs/<name>.py:<arg>`` (``quality.load_config`` of the repository's config file)."""
  return quality.load_config(f"{os.path.join(ROOT, 'configs', name + '.py')}:{arg}")


def make_config(method: str, preset: str, batch_size: int):
  if preset == 'builtin':
    c = load_config(method, 'builtin')
    # The same 24 px input for every method, whatever image size its builtin run trains at.
    c.data.image_size = c.model.img_size = 24
  elif preset == 'vit_b16':
    c = load_config(method, 'imagenet,vit_base')
    c.data.source, c.data.name, c.data.num_workers = 'builtin', 'mnist5k', 0  # images resized
  else:
    raise ValueError(f'unknown preset {preset!r}')
  if method == 'beit':
    c.method.tokenizer_random_init = True
  c.data.batch_size = batch_size
  c.train.progress_bar = False
  return c


def time_method(method: str, preset: str, batch_size: int, steps: int) -> dict:
  c = make_config(method, preset, batch_size)
  exp = experiment.Experiment(c, tempfile.mkdtemp())
  step_fn = step_lib.jit_train_step(exp.method, c, exp.mesh, exp.state_sharding, exp.lr_schedule)
  state = exp.initial_state()
  train_ds = pipeline.train_dataset(sources.get_source(c.data, c.data.train_split),
                                    exp.method.crop_specs(), global_batch=c.data.batch_size,
                                    seed=c.seed)
  batch = sharding.global_batch(exp.mesh, train_ds[0])
  t0 = time.perf_counter()
  state, metrics = step_fn(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = step_fn(state, batch)
  jax.block_until_ready(metrics)
  dt = (time.perf_counter() - t0) / steps
  m, bb = exp.method, exp.method.backbone
  enc_tokens = bb.num_prefix_tokens + getattr(m, 'num_keep', m.num_patches)
  return {'method': method, 'backbone': f'{c.model.backbone} d{bb.embed_dim}x{bb.depth}',
          'image': c.data.image_size, 'patch': bb.patch_size, 'enc_tokens': enc_tokens,
          'batch': batch_size, 'ms_step': 1000 * dt, 'img_s': batch_size / dt,
          'compile_s': compile_s}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', default='builtin')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--methods', default='mae,simmim')
  args = parser.parse_args()
  rows = [time_method(m, args.preset, args.batch_size, args.steps)
          for m in args.methods.split(',')]
  base = next((r for r in rows if r['method'] == 'simmim'), rows[0])
  print(f'device: {jax.devices()[0].device_kind} x {jax.device_count()}')
  print('| method | backbone | image | patch | encoder tokens | batch | ms/step | img/s | '
        'vs SimMIM | compile s |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['method']} | {r['backbone']} | {r['image']} | {r['patch']} | {r['enc_tokens']} | "
          f"{r['batch']} | {r['ms_step']:.1f} | {r['img_s']:.0f} | "
          f"{r['img_s'] / base['img_s']:.2f}x | {r['compile_s']:.0f} |")


if __name__ == '__main__':
  main()
