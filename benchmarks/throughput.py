"""Training-step throughput of SimCLR, BYOL, DINO and MAE on ResNet-18 and ViT-Tiny, optionally side
by side with lightly (PyTorch) on the same machine.

    python benchmarks/throughput.py [--rows all|mfu|simclr_resnet18,...] [--batch_size 256]
        [--steps 10] [--warmup 2] [--augment on|off] [--vs_lightly [--lightly_python PY]]
        [--dtype auto|float32|bfloat16] [--peak_tflops T]

Rows (32x32 inputs): SimCLR, BYOL, DINO (2 global 32 px + 6 local 16 px crops, head out_dim 65536)
and MAE (mask 0.75, decoder 4 blocks x 192 wide, 3 heads; ViT only), each on a CIFAR-stem
ResNet-18 (width 64) and on ViT-Tiny (embed 192, depth 12, heads 3, patch 4). Each config is
``configs/<method>.py:cifar10`` (DINO/MAE: ``cifar10,<backbone>``) with the row's overrides (see
``make_config``); the data source is switched to the built-in set (only the batch's shapes
matter: one fixed batch is used). I-JEPA's rows are ours alone (no lightly step):
``ijepa_vit_tiny`` (``configs/ijepa.py:cifar10,vit_tiny``: 32 px, an 8x8 grid, predictor
192-d x 6; in ``all`` unless ``--vs_lightly``) and the MFU row ``ijepa_vit_base16``
(``configs/ijepa.py:imagenet,vit_base``).

What is timed: the real jitted train step (``step.jit_train_step`` of ``experiment.Experiment``) (on-device augmentation with the
config's recipes, forward, backward, optimizer update, EMA teacher / DINO center updates, the
non-finite guard), compiled once with ``.lower().compile()`` and called on one batch already on
device; compilation and ``--warmup`` steps are excluded, then every one of ``--steps`` steps is
timed to completion (``block_until_ready``) and the median is reported. FLOPs per step come from
XLA's cost analysis of that compiled step; GFLOP/s = FLOPs / median step time; the ceiling is
the median GFLOP/s of a jitted 2048x2048 float32 ``jnp.dot`` on the same machine.

MFU rows (``--rows mfu``, for accelerators): ``mae_vit_base16``, ``dino_vit_base16`` and
``dinov2_vit_base14`` (``configs/dinov2.py:imagenet,vit_base``: 2 x 224 px + 8 x 98 px crops,
patch 14, heads 65536 + 65536, Sinkhorn-Knopp, KoLeo), the
papers' ImageNet steps as ``configs/mae.py:imagenet,vit_base`` (224 px, patch 16, mask 0.75,
decoder 8 x 512) and ``configs/dino.py:imagenet,vit_base`` (2 x 224 px + 10 x 96 px crops, head
65536) define them, in bfloat16 compute (``--dtype``). With a known accelerator (``device_kind``
in ``PEAK_BF16_TFLOPS``, vendor data-sheet dense bf16 peaks) or ``--peak_tflops``, the table adds
MFU = XLA's FLOPs per step (the partitioned program's count times the device count) / median step
time / the devices' summed peak. XLA's count covers what XLA compiles; a custom call (e.g. a cuDNN
attention kernel) may count as zero FLOPs, which would under-state MFU. On one GPU::

    python benchmarks/throughput.py --rows mfu --batch_size 256 --steps 10 --warmup 2

``--vs_lightly``: for each row, ``benchmarks/lightly_step.py`` runs the equivalent lightly step
in the separate virtualenv made by ``benchmarks/lightly_env.sh`` (a subprocess, right after ours,
with the same batch size, crops, head sizes and step count; sizes passed from our configs), and
the table gets lightly's images/s, its FLOPs per step as torch's FlopCounterMode counts them
(matmuls, convolutions, attention), and the ratio ours / lightly. Both sides use every core
(XLA's default CPU thread pool; ``torch.set_num_threads(--threads)``), the process's default
allocator (glibc malloc unless LD_PRELOAD says otherwise: it is printed) and float32.
``--augment off`` replaces our on-device colour augmentation by normalisation only (lightly's
step takes already-augmented tensors; its augmentation runs in DataLoader workers).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position

from benchmarks import quality  # pylint: disable=wrong-import-position
from ssl_jax import runtime  # pylint: disable=wrong-import-position
from ssl_jax.models import resnet  # pylint: disable=wrong-import-position
from ssl_jax.data import pipeline, sources  # pylint: disable=wrong-import-position
from ssl_jax.train import experiment, sharding, step as step_lib  # pylint: disable=wrong-import-position

METHODS = ('simclr', 'byol', 'dino', 'mae', 'dinov2')
BACKBONES = ('resnet18', 'vit_tiny')
ALL_ROWS = tuple(f'{m}_{b}' for m in METHODS for b in BACKBONES)
# The accelerator rows (``--rows mfu``): the papers' ImageNet steps of ViT-B/16 at 224 px, bf16.
MFU_ROWS = ('mae_vit_base16', 'dino_vit_base16', 'dinov2_vit_base14')
MFU_BACKBONES = ('vit_base16', 'vit_base14')
NOT_APPLICABLE = {'mae_resnet18': 'MAE masks ViT patches; no ResNet variant',
                  'dinov2_resnet18': 'DINOv2 masks ViT patches; no ResNet variant'}
# Rows of ours alone (no lightly_step.py counterpart): I-JEPA on ViT-Tiny/4 at 32 px and (an MFU
# row) the paper's step on ViT-B/16 at 224 px.
OURS_ONLY_ROWS = ('ijepa_vit_tiny',)
# Speech rows (ours alone; the PyTorch SSL libraries have no speech): row -> (method, backbone),
# the builtin recipe's step on 1 s clips of the built-in spoken_words set.
SPEECH_ROWS = {'wav2vec2_tiny': ('wav2vec2', 'audio_tiny'),
               'data2vec-audio_tiny': ('data2vec_audio', 'audio_tiny'),
               'wav2vec2_base': ('wav2vec2', 'wav2vec2_base'),
               'data2vec-audio_base': ('data2vec_audio', 'wav2vec2_base')}
OURS_ONLY_ROWS += tuple(SPEECH_ROWS)
MFU_ROWS += ('ijepa_vit_base16',)
LABELS = {'simclr': 'SimCLR', 'byol': 'BYOL', 'dino': 'DINO', 'mae': 'MAE',
          'resnet18': 'ResNet-18 (CIFAR stem)', 'vit_tiny': 'ViT-Tiny/4',
          'vit_base16': 'ViT-B/16, 224 px', 'dinov2': 'DINOv2', 'vit_base14': 'ViT-B/14, 224 px',
          'ijepa': 'I-JEPA', 'wav2vec2': 'wav2vec 2.0', 'data2vec-audio': 'data2vec (speech)',
          'tiny': 'audio_tiny, 1 s clips', 'base': 'wav2vec 2.0 BASE, 1 s clips'}

# Dense (no sparsity) bf16 peak TFLOP/s of one JAX device, from the vendors' data sheets, for MFU.
# Matched in order as a substring of the lower-cased ``device_kind``; TPU v2/v3 devices are single
# TensorCores (half a chip), v4 and later one chip each. Unknown kinds: pass --peak_tflops.
PEAK_BF16_TFLOPS = (
    ('h100 pcie', 756.0), ('h100', 989.4), ('h200', 989.4), ('b200', 2250.0), ('a100', 312.0),
    ('l4', 121.0), ('tpu v2', 22.5), ('tpu v3', 61.5), ('tpu v4', 275.0),
    ('tpu v5 lite', 197.0), ('tpu v5e', 197.0), ('tpu v5', 459.0), ('tpu v6 lite', 918.0),
    ('tpu v6e', 918.0))


def peak_tflops(device_kind: str) -> float | None:
  """bf16 dense peak TFLOP/s of one device of this kind (``PEAK_BF16_TFLOPS``), or None."""
  kind = device_kind.lower()
  for key, tflops in PEAK_BF16_TFLOPS:
    if key in kind:
      return tflops
  return None


def mfu(flops_per_step: float | None, seconds_per_step: float, num_devices: int,
        peak_tflops_per_device: float | None) -> float | None:
  """Model FLOPs utilisation: achieved FLOP/s over the devices' summed peak (a fraction)."""
  if not flops_per_step or not peak_tflops_per_device:
    return None
  return flops_per_step / seconds_per_step / (num_devices * peak_tflops_per_device * 1e12)


DEFAULT_LIGHTLY_PYTHON = os.path.join(ROOT, 'benchmarks', '.lightly_venv', 'bin', 'python')

# DINO / MAE benchmark shapes (the issue's): 6 local crops of 16 px, head 65536; MAE decoder.
DINO_LOCAL_CROPS, DINO_LOCAL_SIZE, DINO_OUT_DIM = 6, 16, 65536
# DINOv2's iBOT head runs on every patch token of the global crops (static shapes): 8192
# prototypes keep its logits (2 B x 64 patches x K) in a CPU's memory at batch 256.
DINOV2_PATCH_OUT_DIM = 8192
MAE_DECODER = dict(decoder_dim=192, decoder_depth=4, decoder_heads=3)


def load_config(name: str, arg: str):
  """``configs/<name>.py:<arg>`` (``quality.load_config`` of the repository's config file)."""
  return quality.load_config(f"{os.path.join(ROOT, 'configs', name + '.py')}:{arg}")


def make_config(row: str, batch_size: int, augment: bool = True, conv_impl: str = 'auto',
                dtype: str = 'auto'):
  """``configs/<method>.py:cifar10[,<backbone>]`` with the benchmark's shapes; the MFU rows
  (``*_vit_base16``) are ``configs/<method>.py:imagenet,vit_base`` as they are (224 px, patch 16;
  MAE: mask 0.75, decoder 8 x 512; DINO: 2 x 224 px + 10 x 96 px crops, head 65536). ``dtype``
  'auto': bfloat16 compute for the MFU rows, float32 for the others (as lightly's side)."""
  from configs import _common as common  # pylint: disable=g-import-not-at-top
  if row in SPEECH_ROWS:
    method, backbone = SPEECH_ROWS[row]
    c = load_config(method, 'builtin')
    c.model.backbone = backbone
    c.model.dtype = 'float32' if dtype in ('auto', 'bf16_dots') else dtype
    c.data.batch_size, c.data.num_workers = batch_size, 0
    c.train.progress_bar, c.train.final_eval, c.train.knn_every = False, False, 0
    return c
  method, _, bb = row.partition('_')
  if bb in MFU_BACKBONES:
    c = load_config(method, 'imagenet,vit_base')
    c.data.max_upscale = 1e3  # 224 px crops of the built-in 28 px digits: only shapes matter
  elif method in ('dino', 'mae', 'ijepa'):
    c = load_config(method, f'cifar10,{bb}')
  elif method == 'dinov2':   # no cifar10 variant: the ViT-S/14 recipe at 32 px, shrunk below
    c = load_config(method, 'imagenet')
    c.data.image_size = 32
  else:
    c = load_config(method, 'cifar10')
  if bb == 'vit_tiny':
    common.vit(c, 'vit_tiny', patch_size=4)
    for key in ('embed_dim', 'depth', 'num_heads'):
      c.model[key] = 0  # the vit_tiny preset: 192, 12, 3
  elif bb == 'resnet18':
    common.cifar_resnet18(c, width=64)
    c.model.conv_impl = conv_impl
  if bb not in MFU_BACKBONES:
    if method in ('dino', 'dinov2'):
      c.method.out_dim = DINO_OUT_DIM
      c.method.num_local_crops = DINO_LOCAL_CROPS
      c.method.local_crop_size = DINO_LOCAL_SIZE
    if method == 'dinov2':
      c.method.patch_out_dim = DINOV2_PATCH_OUT_DIM
      c.method.freeze_last_layer_steps = 0
    if method == 'mae':
      c.method.mask_ratio = 0.75
      c.method.update(MAE_DECODER)
    c.data.image_size = 32
  if dtype == 'auto':
    dtype = 'bfloat16' if bb in MFU_BACKBONES else 'float32'
  if dtype == 'bf16_dots':   # float32 compute, the ViT's Dense matmuls in bf16 (model.cpu_dots)
    dtype, c.model.cpu_dots = 'float32', 'bf16'
  c.model.dtype = dtype
  # One fixed batch of the right shapes; the data set is irrelevant (no TFDS download needed).
  c.data.source, c.data.name, c.data.num_workers = 'builtin', 'mnist5k', 0
  c.data.batch_size = batch_size
  c.train.progress_bar = False
  c.train.final_eval = False
  c.train.knn_every = 0
  if not augment:
    recipe = c.aug.recipe
    c.aug.recipe = 'none' if isinstance(recipe, str) else ('none',) * len(recipe)
  return c


def lightly_spec(row: str, c) -> dict:
  """The sizes and hyper-parameters lightly_step.py needs, read from our config."""
  method, _, bb = row.partition('_')
  m, o = c.method, c.optim
  spec = {'image_size': c.data.image_size}
  if bb == 'vit_tiny':
    from ssl_jax.models.vit import VIT_PRESETS  # pylint: disable=g-import-not-at-top
    spec.update(VIT_PRESETS['vit_tiny'], patch_size=c.model.patch_size)
  else:
    spec.update(width=c.model.width)
  if method == 'simclr':
    assert m.proj_layers == 2, m.proj_layers
    spec.update(temperature=m.temperature, proj_hidden_dim=m.proj_hidden_dim, proj_dim=m.proj_dim,
                lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum,
                trust_coefficient=o.trust_coefficient)
  elif method == 'byol':
    assert m.proj_layers == 2 and m.pred_layers == 2
    spec.update(proj_hidden_dim=m.proj_hidden_dim, proj_dim=m.proj_dim,
                pred_hidden_dim=m.pred_hidden_dim, pred_dim=m.pred_dim, ema_momentum=m.momentum,
                lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum,
                trust_coefficient=o.trust_coefficient)
  elif method == 'dino':
    assert m.num_layers == 3, m.num_layers
    spec.update(out_dim=m.out_dim, hidden_dim=m.hidden_dim, bottleneck_dim=m.bottleneck_dim,
                norm_last_layer=m.norm_last_layer, num_local_crops=m.num_local_crops,
                local_crop_size=m.local_crop_size, student_temp=m.student_temp,
                teacher_temp=m.warmup_teacher_temp, center_momentum=m.center_momentum,
                ema_momentum=m.momentum, lr=o.lr, weight_decay=o.weight_decay, b1=o.b1, b2=o.b2,
                clip_grad=o.clip_grad_norm, drop_path_rate=c.model.drop_path_rate)
  elif method == 'mae':
    spec.update(mask_ratio=m.mask_ratio, decoder_dim=m.decoder_dim,
                decoder_depth=m.decoder_depth, decoder_heads=m.decoder_heads,
                norm_pix_loss=m.norm_pix_loss, lr=o.lr, weight_decay=o.weight_decay, b1=o.b1,
                b2=o.b2)
  return spec


def step_flops(compiled) -> float | None:
  """FLOPs of one compiled step from XLA's cost analysis (a dict; older jax: a list of dicts)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or 'flops' not in cost:
    return None
  return float(cost['flops'])


def time_ours(row: str, batch_size: int, steps: int, warmup: int, augment: bool,
              conv_impl: str = 'auto', dtype: str = 'auto',
              peak_tflops_per_device: float | None = None) -> dict:
  c = make_config(row, batch_size, augment, conv_impl, dtype)
  exp = experiment.Experiment(c, tempfile.mkdtemp())
  step_fn = step_lib.jit_train_step(exp.method, c, exp.mesh, exp.state_sharding, exp.lr_schedule)
  state = exp.initial_state()
  train_ds = pipeline.train_dataset(sources.get_source(c.data, c.data.train_split),
                                    exp.method.host_transform(), global_batch=c.data.batch_size,
                                    seed=c.seed)
  batch = sharding.global_batch(exp.mesh, train_ds[0])
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()  # the jitted step's own program
  compile_s = time.perf_counter() - t0
  # The cost analysis of a partitioned program counts one device's share.
  flops = step_flops(compiled)
  flops = flops and flops * exp.mesh.size
  for _ in range(warmup):
    state, _ = compiled(state, batch)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  out = {'row': row, 'batch': batch_size, 'ms_step': 1000 * med, 'img_s': batch_size / med,
         'flops': flops, 'gflops_s': flops / med / 1e9 if flops else None,
         'mfu': mfu(flops, med, exp.mesh.size, peak_tflops_per_device),
         'devices': exp.mesh.size, 'dtype': c.model.dtype,
         'compile_s': compile_s, 'ms_steps': [round(1000 * t, 2) for t in times],
         'loss': float(metrics['loss'])}
  if row in ALL_ROWS:
    out['spec'] = lightly_spec(row, c)
  del state, metrics, compiled, exp
  return out


def jax_matmul_gflops(n: int = 2048, reps: int = 20) -> float:
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  for _ in range(3):
    dot(a, b).block_until_ready()
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    dot(a, b).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2 * n ** 3 / statistics.median(times) / 1e9


def run_lightly(python: str, row: str, spec: dict, args, matmul: bool) -> list[dict]:
  cmd = [python, os.path.join(ROOT, 'benchmarks', 'lightly_step.py'), '--rows', row,
         '--batch_size', str(args.batch_size), '--steps', str(args.steps),
         '--warmup', str(args.warmup), '--threads', str(args.threads),
         '--spec', json.dumps({row: spec})]
  if matmul:
    cmd.append('--matmul')
  proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), check=False)
  if proc.returncode:
    raise RuntimeError(f'lightly_step.py failed for {row} (exit {proc.returncode}):\n'
                       f'{proc.stderr[-3000:]}')
  return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]


def _fmt(x, spec='.0f', none='-'):
  return none if x is None else format(x, spec)


def print_table(rows, args, peak_jax, lightly_env, peak_device=None):
  vs = args.vs_lightly
  with_mfu = peak_device is not None
  head = ['method', 'backbone', 'batch', 'ms/step', 'img/s', 'GFLOP/step (XLA)', 'GFLOP/s',
          '% of matmul ceiling']
  if with_mfu:
    head += ['dtype', 'MFU']
  if vs:
    head += ['lightly img/s', 'lightly GFLOP/step (torch)', 'lightly GFLOP/s', 'ours / lightly']
  print('| ' + ' | '.join(head) + ' |')
  print('|' + '---|' * len(head))
  for r in rows:
    method, _, bb = r['row'].partition('_')
    cells = [LABELS[method], LABELS[bb]]
    if 'na' in r:
      cells += ['n/a'] * (len(head) - 2)
      cells[-1] = f"n/a ({r['na']})"
    else:
      cells += [str(r['batch']), _fmt(r['ms_step'], '.1f'), _fmt(r['img_s'], '.1f'),
                _fmt(r['flops'] and r['flops'] / 1e9, '.1f'), _fmt(r['gflops_s'], '.1f'),
                _fmt(r['gflops_s'] and 100 * r['gflops_s'] / peak_jax, '.0f')]
      if with_mfu:
        cells += [r['dtype'], f"{100 * r['mfu']:.1f}%" if r['mfu'] else '-']
      if vs:
        t = r['lightly']
        t_gflops_s = t['flops'] / (t['ms_step'] / 1000) / 1e9 if t['flops'] else None
        cells += [_fmt(t['img_s'], '.1f'), _fmt(t['flops'] / 1e9, '.1f'), _fmt(t_gflops_s, '.1f'),
                  f"{r['img_s'] / t['img_s']:.2f}x"]
    print('| ' + ' | '.join(cells) + ' |')
  print()
  cpu = runtime.cpu_description()
  preload = os.environ.get('LD_PRELOAD', '')
  print(f'Machine: {cpu}; {platform.platform()}. '
        f'JAX {jax.__version__} ({jax.devices()[0].platform}, {jax.device_count()} device(s)).')
  if with_mfu:
    print(f'MFU: FLOPs per step from XLA\'s cost analysis (all devices) / median step time / '
          f'({jax.device_count()} x {peak_device:g} TFLOP/s, the bf16 dense peak of '
          f'{jax.devices()[0].device_kind!r}{" from --peak_tflops" if args.peak_tflops else ""}).')
  print(f'Float32 matmul ceiling (2048x2048, median of 20): JAX {peak_jax:.0f} GFLOP/s'
        + (f", torch {lightly_env['matmul_gflops']:.0f} GFLOP/s" if lightly_env else '') + '.')
  print(f'Median of {args.steps} timed steps after {args.warmup} warm-up step(s); compile '
        f'excluded; batch already on device. Ours: the jitted train step of experiment.Experiment '
        f"({'with' if args.augment == 'on' else 'without'} on-device colour augmentation), "
        f'XLA CPU default threads ({os.cpu_count()}).')
  if lightly_env:
    print(f"lightly {lightly_env['lightly']}, torch {lightly_env['torch']}, torchvision "
          f"{lightly_env['torchvision']}, timm {lightly_env['timm']}: eager, "
          f"torch.set_num_threads({lightly_env['threads']}), float32, pre-augmented input "
          f"tensors. lightly FLOPs: torch FlopCounterMode (matmul/conv/attention only).")
  alloc = f'LD_PRELOAD={preload}' if preload else 'glibc malloc (no LD_PRELOAD)'
  tunables = os.environ.get('GLIBC_TUNABLES', '')
  alloc += f', GLIBC_TUNABLES={tunables}' if tunables else ', no GLIBC_TUNABLES'
  print(f'Allocator: {alloc} for both sides (the lightly subprocess inherits this environment).')
  print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS') or '(none)'}")
  print(f'1-min load average before / after the run: {args.load[0]:.1f} / {args.load[1]:.1f} '
        '(should be ~0: eager PyTorch threads are very sensitive to other load).')
  print(f"Command: python benchmarks/throughput.py {' '.join(sys.argv[1:])}")


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--rows', default='all',
                 help=f"'all' (the CPU rows), 'mfu' ({', '.join(MFU_ROWS)}: ViT-B/16 at 224 px, "
                 'for accelerators) or a comma list of '
                 f"{', '.join(ALL_ROWS + OURS_ONLY_ROWS + MFU_ROWS)}")
  p.add_argument('--dtype', choices=('auto', 'float32', 'bfloat16', 'bf16_dots'), default='auto',
                 help='compute dtype (model.dtype); auto: bfloat16 for the ViT-B/16 rows, '
                 "float32 for the others; bf16_dots: float32 with model.cpu_dots='bf16' (the "
                 "ViT's Dense matmuls with bf16 operands, float32 accumulation)")
  p.add_argument('--peak_tflops', type=float, default=0.0,
                 help='peak TFLOP/s of one device for the MFU column (default: the bf16 dense '
                 "peak of a known accelerator's device_kind; none on CPU)")
  p.add_argument('--batch_size', type=int, default=256)
  p.add_argument('--steps', type=int, default=10, help='timed steps (median reported)')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps after compilation')
  p.add_argument('--augment', choices=('on', 'off'), default='on',
                 help='our on-device colour augmentation inside the step (the real train step)')
  p.add_argument('--conv_impl', choices=resnet.CONV_IMPLS, default='auto',
                 help="ResNet rows' convolutions (model.conv_impl; auto = im2col matmuls on CPU)")
  p.add_argument('--vs_lightly', action='store_true',
                 help='also time lightly (PyTorch) in the venv of benchmarks/lightly_env.sh')
  p.add_argument('--lightly_python', default=os.environ.get('LIGHTLY_PYTHON',
                                                            DEFAULT_LIGHTLY_PYTHON))
  p.add_argument('--threads', type=int, default=os.cpu_count(), help='torch threads (lightly)')
  p.add_argument('--json', default='',
                 help='also write the raw results here (rewritten after every row)')
  p.add_argument('--hugepages', choices=('on', 'off'), default='on',
                 help='re-run under GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (as python -m '
                 'ssl_jax.main does; both sides inherit it) unless already set')
  p.add_argument('--xla_ynn', choices=('auto', 'default', 'off'), default='auto',
                 help="auto: as python -m ssl_jax.main (model.cpu_dots='auto'): off when every "
                 "row is a ViT row, else default; default: XLA's own CPU dot fusions (YNNPACK); "
                 'off: add --xla_cpu_experimental_ynn_fusion_type= to XLA_FLAGS (dots through '
                 'Eigen; see docs/performance.md)')
  args = p.parse_args()
  cpu_rows = ALL_ROWS + (() if args.vs_lightly else OURS_ONLY_ROWS)
  rows = {'all': cpu_rows, 'mfu': MFU_ROWS}.get(args.rows) or tuple(args.rows.split(','))
  for row in rows:
    if row not in ALL_ROWS + OURS_ONLY_ROWS + MFU_ROWS:
      p.error(f'unknown row {row!r}; choose from '
              f'{", ".join(ALL_ROWS + OURS_ONLY_ROWS + MFU_ROWS)}')
    if args.vs_lightly and row not in ALL_ROWS:
      p.error(f'--vs_lightly: lightly_step.py has no {row} step (the SimCLR, BYOL, DINO and '
              'MAE ResNet-18 and ViT-Tiny rows only); time this row without it')
  if args.peak_tflops < 0:
    p.error(f'--peak_tflops={args.peak_tflops}: must be positive (or 0: look it up)')
  ynn = args.xla_ynn
  if args.dtype == 'bf16_dots' and ynn == 'auto':
    ynn = 'default'   # model.cpu_dots='bf16' runs on XLA's YNNPACK fusions
  if ynn == 'auto':
    ynn = 'off' if all('_vit_' in r for r in rows) else 'default'
    if ynn == 'default' and any('_vit_' in r for r in rows):
      print("NOTE: --xla_ynn auto with ResNet and ViT rows together keeps XLA's default dot "
            'fusions (one setting per process); python -m ssl_jax.main runs ViT configs with '
            f'{runtime.EIGEN_DOTS_FLAG} (model.cpu_dots). Time ViT rows in their own run for '
            "the library's setting.", file=sys.stderr, flush=True)
  xla_flags = runtime.eigen_dots_xla_flags(os.environ.get('XLA_FLAGS', ''))
  if ynn == 'off' and xla_flags is not None:
    # Read when the backend starts (first computation), so setting it here is in time.
    os.environ['XLA_FLAGS'] = xla_flags
  if args.hugepages == 'on':
    runtime.reexec_with_hugepages()
  if args.vs_lightly and not os.path.exists(args.lightly_python):
    p.error(f'--vs_lightly: {args.lightly_python} not found; run bash benchmarks/lightly_env.sh')

  load_start = os.getloadavg()[0]
  if load_start > 0.5:
    print(f'WARNING: 1-min load average {load_start:.1f} before the run: other processes are '
          'using the CPU. Eager PyTorch with several threads slows down far more than XLA under '
          'such contention (seen here: a lightly step 10-100x slower), which would inflate the '
          'ratios; rerun on a quiet machine.', file=sys.stderr, flush=True)
  peak_jax = jax_matmul_gflops()
  print(f'[ceiling] JAX float32 2048x2048 matmul: {peak_jax:.0f} GFLOP/s', file=sys.stderr,
        flush=True)
  peak_device = args.peak_tflops or peak_tflops(jax.devices()[0].device_kind)
  if peak_device is None and jax.devices()[0].platform != 'cpu':
    print(f'NOTE: no bf16 peak known for {jax.devices()[0].device_kind!r}; pass --peak_tflops '
          'for an MFU column', file=sys.stderr, flush=True)
  results, lightly_env = [], None
  for row in rows:
    if row in NOT_APPLICABLE:
      results.append({'row': row, 'na': NOT_APPLICABLE[row]})
      continue
    r = time_ours(row, args.batch_size, args.steps, args.warmup, args.augment == 'on',
                  args.conv_impl, args.dtype, peak_device)
    print(f"[ours] {row}: {r['img_s']:.1f} img/s, {_fmt(r['gflops_s'])} GFLOP/s"
          + (f", MFU {100 * r['mfu']:.1f}%" if r['mfu'] else '')
          + f" (compile {r['compile_s']:.0f} s)", file=sys.stderr, flush=True)
    if args.vs_lightly:
      out = run_lightly(args.lightly_python, row, r['spec'], args, matmul=lightly_env is None)
      for o in out:
        if 'matmul_gflops' in o:
          lightly_env = o
        else:
          r['lightly'] = o
      print(f"[lightly] {row}: {r['lightly']['img_s']:.1f} img/s "
            f"(ours / lightly {r['img_s'] / r['lightly']['img_s']:.2f}x)", file=sys.stderr,
            flush=True)
    results.append(r)
    # After every row, so that a run stopped part-way keeps the rows it finished.
    write_json(args.json, results, peak_jax, lightly_env, (load_start, os.getloadavg()[0]))
  args.load = (load_start, os.getloadavg()[0])
  print_table(results, args, peak_jax, lightly_env, peak_device)
  write_json(args.json, results, peak_jax, lightly_env, args.load)


def write_json(path, results, peak_jax, lightly_env, load):
  """The raw results so far (nothing when ``path`` is empty)."""
  if path:
    with open(path, 'w') as f:
      json.dump({'rows': results, 'matmul_gflops_jax': peak_jax, 'lightly_env': lightly_env,
                 'load_avg': load, 'argv': sys.argv[1:]}, f, indent=1)


if __name__ == '__main__':
  main()
