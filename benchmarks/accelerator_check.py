"""One-command accelerator check (issue 35), driven by ``benchmarks/accelerator_check.sh``.

Prints the device, then runs, each timed and recorded in one JSON file:

1. ``quickstart``: 20 steps of ``configs/simclr.py:builtin`` on the device (no evaluation):
   finite losses and a last logged loss below the first;
2. ``mfu``: ``benchmarks/throughput.py --rows mfu`` (ViT-B/16 MAE and DINO, DINOv2 ViT-B/14 and
   I-JEPA ViT-B/16 at 224 px, bf16): images/s, TFLOP/s and MFU per row;
3. ``input``: ``benchmarks/input_pipeline.py`` on the built-in set and 224 px JPEGs (host images/s).

``--smoke`` shrinks everything (a tiny model, 4 steps, no MFU rows) so the test suite runs the
whole path on CPU in about a minute. The JSON: ``{"device": {...}, "quickstart": {...},
"mfu": [rows] | {"skipped": why}, "input": {...} | {"skipped": why}, "seconds": total}``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def device_info() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  d = jax.devices()[0]
  return {'platform': d.platform, 'device_kind': d.device_kind, 'count': jax.device_count(),
          'jax': jax.__version__}


def quickstart(steps: int, smoke: bool) -> dict:
  """``steps`` train steps of the quickstart config; losses must be finite and fall."""
  import ssl_jax  # pylint: disable=g-import-not-at-top
  from configs import simclr  # pylint: disable=g-import-not-at-top
  from ssl_jax import paths  # pylint: disable=g-import-not-at-top
  c = simclr.get_config('builtin')
  c.train.steps, c.train.log_every, c.train.checkpoint_every = steps, 1, steps
  c.train.progress_bar, c.train.final_eval, c.train.knn_every = False, False, 0
  c.optim.warmup_steps = 2
  if smoke:   # CPU: a tiny model
    c.data.image_size, c.data.batch_size = 16, 32
    c.model.width, c.model.stage_sizes = 4, (1, 1, 1, 1)
    c.method.proj_hidden_dim, c.method.proj_dim = 32, 16
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    ssl_jax.pretrain(c, workdir)
    seconds = time.perf_counter() - t0
    history = paths.read_json(paths.as_path(workdir) / 'history.json', [])
  losses = [h['loss'] for h in history if 'loss' in h]
  finite = bool(losses) and all(math.isfinite(x) for x in losses)
  falls = finite and losses[-1] < losses[0]
  ips = [h['images_per_sec'] for h in history if h.get('images_per_sec')]
  # A 4-step smoke run of a tiny model need not fall yet: it checks the path, finite losses.
  return {'ok': finite and (falls or smoke), 'finite': finite, 'falls': falls, 'steps': steps, 'first_loss': losses[0] if losses else None,
          'last_loss': losses[-1] if losses else None, 'seconds': seconds,
          'images_per_sec': ips[-1] if ips else None}


def _run(cmd, timeout) -> tuple[int, str]:
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
  print(out.stdout[-4000:], out.stderr[-2000:] if out.returncode else '', sep='\n', flush=True)
  return out.returncode, out.stdout


def mfu_rows(timeout: int) -> list | dict:
  with tempfile.NamedTemporaryFile(suffix='.json', delete=False) as f:
    path = f.name
  rc, _ = _run([sys.executable, 'benchmarks/throughput.py', '--rows', 'mfu', '--steps', '10',
                '--warmup', '2', '--json', path], timeout)
  if rc:
    return {'skipped': f'throughput.py exited {rc}'}
  with open(path) as f:
    return json.load(f)


def input_row(timeout: int) -> list | dict:
  with tempfile.NamedTemporaryFile(suffix='.json', delete=False) as f:
    path = f.name
  rc, _ = _run([sys.executable, 'benchmarks/input_pipeline.py', '--workers', '0,4',
                '--only', 'builtin,jpeg224', '--n_images', '1000', '--out', path], timeout)
  if rc:
    return {'skipped': f'input_pipeline.py exited {rc}'}
  with open(path) as f:
    return json.load(f)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out', default='accelerator_check.json')
  p.add_argument('--smoke', action='store_true', help='tiny CPU run of the whole path (tests)')
  args = p.parse_args(argv)
  t0 = time.perf_counter()
  result = {'device': device_info()}
  print('device:', result['device'], flush=True)
  result['quickstart'] = quickstart(4 if args.smoke else 20, args.smoke)
  print('quickstart:', result['quickstart'], flush=True)
  if args.smoke or result['device']['platform'] == 'cpu':
    result['mfu'] = {'skipped': 'CPU: the MFU rows are for accelerators'}
  else:
    result['mfu'] = mfu_rows(timeout=300)
  result['input'] = ({'skipped': '--smoke'} if args.smoke else input_row(timeout=120))
  result['seconds'] = time.perf_counter() - t0
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=1)
  print(f'wrote {args.out} ({result["seconds"]:.0f} s)')
  return 0 if result['quickstart']['ok'] else 1


if __name__ == '__main__':
  sys.exit(main())
