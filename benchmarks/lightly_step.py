"""The PyTorch side of ``benchmarks/throughput.py --vs_lightly``: lightly's training steps on CPU.

Runs inside the separate virtualenv made by ``benchmarks/lightly_env.sh`` (torch CPU, torchvision,
timm, lightly), never inside ssl_jax's environment. Standalone use::

    benchmarks/.lightly_venv/bin/python benchmarks/lightly_step.py --rows simclr_resnet18 \
        --batch_size 8 --steps 2 [--threads 2] [--matmul]
    benchmarks/.lightly_venv/bin/python benchmarks/lightly_step.py --check   # imports only

Each row builds the equivalent model from lightly's building blocks, the way lightly's own examples
do (lightly.models.modules heads, lightly.loss losses, lightly.models.utils.update_momentum, the
timm-based masked ViT for MAE), on torchvision's resnet18 with the CIFAR stem (3x3/1 conv, no
max-pool) or timm's ViT-Tiny (img 32, patch 4, embed 192, depth 12, heads 3). One timed step is
forward + backward + optimizer step + EMA / center updates on a fixed batch of already-augmented
float views (lightly augments in its DataLoader workers, outside the step). Where ssl_jax batches
views differently from lightly's examples, this side does what ssl_jax does, so both compute the
same thing with the same BatchNorm semantics: SimCLR runs both views through one backbone call,
BYOL one call per view (online and target), DINO one call per crop resolution (2 globals, then the
locals) and the head once over all crops.

``--spec`` (JSON, from throughput.py) carries the sizes and hyper-parameters read from ssl_jax's
configs; the defaults below are the same values, for standalone runs.

Prints one JSON object per line: per row {row, img_s, ms_step (median), ms_steps, flops (torch's
FlopCounterMode of one step: matmuls, convolutions and attention only), ...}, and with --matmul a
{matmul_gflops} line first.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

os.environ.setdefault('LIGHTLY_DID_VERSION_CHECK', 'True')  # no background check of PyPI

import torch  # pylint: disable=g-import-not-at-top
from torch import nn  # pylint: disable=g-import-not-at-top


def _import_torchvision():
  """PyPI's torchvision is a CUDA build whose C++ ops do not load next to the CPU torch; its
  import then fails registering fake kernels for ``torchvision::nms``/``qnms``. Defining the two
  op schemas (no kernels) first lets the pure-Python parts import (as tests/export/conftest.py);
  nothing here calls them."""
  try:
    import torchvision  # pylint: disable=g-import-not-at-top
    return torchvision, False
  except (RuntimeError, ImportError):
    for name in [m for m in sys.modules if m.split('.')[0] in ('timm', 'torchvision')]:
      del sys.modules[name]
  lib = torch.library.Library('torchvision', 'DEF')
  lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
  lib.define('qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor')
  _import_torchvision.lib = lib  # keep the definitions alive
  import torchvision  # pylint: disable=g-import-not-at-top
  return torchvision, True


torchvision, TORCHVISION_OPS_STUBBED = _import_torchvision()
import lightly  # pylint: disable=g-import-not-at-top,wrong-import-position
import timm  # pylint: disable=g-import-not-at-top,wrong-import-position
from lightly.loss import DINOLoss, NegativeCosineSimilarity, NTXentLoss  # pylint: disable=g-import-not-at-top,wrong-import-position
from lightly.models import utils as lutils  # pylint: disable=g-import-not-at-top,wrong-import-position
from lightly.models.modules import (  # pylint: disable=g-import-not-at-top,wrong-import-position
    BYOLPredictionHead, BYOLProjectionHead, DINOProjectionHead, MAEDecoderTIMM,
    MaskedVisionTransformerTIMM, SimCLRProjectionHead)
from lightly.utils.lars import LARS  # pylint: disable=g-import-not-at-top,wrong-import-position

# The values ssl_jax's configs use for the benchmark rows (throughput.py passes them in --spec).
DEFAULTS = {
    'resnet18': dict(width=64),
    'vit_tiny': dict(patch_size=4, embed_dim=192, depth=12, num_heads=3),
    'simclr': dict(temperature=0.5, proj_hidden_dim=2048, proj_dim=128, lr=1.0,
                   weight_decay=1e-6, momentum=0.9, trust_coefficient=0.001),
    'byol': dict(proj_hidden_dim=4096, proj_dim=256, pred_hidden_dim=4096, pred_dim=256,
                 ema_momentum=0.99, lr=1.0, weight_decay=1e-5, momentum=0.9,
                 trust_coefficient=0.001),
    'dino': dict(out_dim=65536, hidden_dim=2048, bottleneck_dim=256, norm_last_layer=True,
                 num_local_crops=6, local_crop_size=16, student_temp=0.1, teacher_temp=0.04,
                 center_momentum=0.9, ema_momentum=0.996, lr=5e-4, weight_decay=0.04,
                 b1=0.9, b2=0.999, clip_grad=3.0, drop_path_rate=0.1),
    'mae': dict(mask_ratio=0.75, decoder_dim=192, decoder_depth=4, decoder_heads=3,
                norm_pix_loss=True, lr=1.5e-4, weight_decay=0.05, b1=0.9, b2=0.95),
}


# -- backbones --------------------------------------------------------------------------------------
def cifar_resnet18(width: int = 64) -> nn.Module:
  """torchvision resnet18 with the CIFAR stem (3x3 stride-1 conv, no max-pool); (B, 512) pooled
  features (fc removed)."""
  if width != 64:
    raise ValueError('torchvision resnet18 has width 64 only')
  net = torchvision.models.resnet18()
  net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
  net.maxpool = nn.Identity()
  net.fc = nn.Identity()
  return net


def vit_tiny(spec, drop_path_rate=0.0, dynamic_img_size=False):
  """timm's VisionTransformer with the ViT-Tiny shape at spec's image/patch size; [CLS] pooled."""
  return timm.models.vision_transformer.VisionTransformer(
      img_size=spec['image_size'], patch_size=spec['patch_size'], embed_dim=spec['embed_dim'],
      depth=spec['depth'], num_heads=spec['num_heads'], num_classes=0,
      drop_path_rate=drop_path_rate, dynamic_img_size=dynamic_img_size)


def backbone(spec, **kw):
  if spec['backbone'] == 'resnet18':
    return cifar_resnet18(spec.get('width', 64)), 512
  return vit_tiny(spec, **kw), spec['embed_dim']


# -- methods: each returns (modules to put in train mode, optimizer, step(views) -> loss) ------------
def simclr(spec):
  bb, dim = backbone(spec)
  head = SimCLRProjectionHead(dim, spec['proj_hidden_dim'], spec['proj_dim'], num_layers=2)
  model = nn.Sequential(bb, head)
  criterion = NTXentLoss(temperature=spec['temperature'])
  opt = LARS(model.parameters(), lr=spec['lr'], momentum=spec['momentum'],
             weight_decay=spec['weight_decay'], trust_coefficient=spec['trust_coefficient'])

  def step(views):
    z = model(torch.cat([views['view0'], views['view1']]))  # one call: BN over both views
    z0, z1 = z.chunk(2)
    loss = criterion(z0, z1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss
  return [model], step


def byol(spec):
  bb, dim = backbone(spec)
  proj = BYOLProjectionHead(dim, spec['proj_hidden_dim'], spec['proj_dim'])
  pred = BYOLPredictionHead(spec['proj_dim'], spec['pred_hidden_dim'], spec['pred_dim'])
  bb_t, proj_t = copy.deepcopy(bb), copy.deepcopy(proj)
  lutils.deactivate_requires_grad(bb_t)
  lutils.deactivate_requires_grad(proj_t)
  criterion = NegativeCosineSimilarity()
  params = [*bb.parameters(), *proj.parameters(), *pred.parameters()]
  opt = LARS(params, lr=spec['lr'], momentum=spec['momentum'],
             weight_decay=spec['weight_decay'], trust_coefficient=spec['trust_coefficient'])
  m = spec['ema_momentum']

  def step(views):
    x0, x1 = views['view0'], views['view1']
    p0, p1 = pred(proj(bb(x0))), pred(proj(bb(x1)))
    with torch.no_grad():
      t0, t1 = proj_t(bb_t(x0)), proj_t(bb_t(x1))
    loss = 0.5 * (criterion(p0, t1) + criterion(p1, t0))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    lutils.update_momentum(bb, bb_t, m)
    lutils.update_momentum(proj, proj_t, m)
    return loss
  return [bb, proj, pred, bb_t, proj_t], step


def dino(spec):
  is_vit = spec['backbone'] != 'resnet18'
  bb, dim = backbone(spec, **(dict(drop_path_rate=spec['drop_path_rate'], dynamic_img_size=True)
                              if is_vit else {}))
  head = DINOProjectionHead(dim, spec['hidden_dim'], spec['bottleneck_dim'], spec['out_dim'],
                            batch_norm=False, freeze_last_layer=-1,
                            norm_last_layer=spec['norm_last_layer'])
  # A new teacher head with the student's weights (lightly's DINO example: the weight-normed
  # head cannot be deep-copied).
  head_t = DINOProjectionHead(dim, spec['hidden_dim'], spec['bottleneck_dim'], spec['out_dim'],
                              batch_norm=False, freeze_last_layer=-1,
                              norm_last_layer=spec['norm_last_layer'])
  head_t.load_state_dict(head.state_dict())
  bb_t = copy.deepcopy(bb)
  lutils.deactivate_requires_grad(bb_t)
  lutils.deactivate_requires_grad(head_t)
  criterion = DINOLoss(output_dim=spec['out_dim'], warmup_teacher_temp=spec['teacher_temp'],
                       teacher_temp=spec['teacher_temp'], warmup_teacher_temp_epochs=0,
                       student_temp=spec['student_temp'],
                       center_momentum=spec['center_momentum'])
  params = [*bb.parameters(), *head.parameters()]
  opt = torch.optim.AdamW(params, lr=spec['lr'], betas=(spec['b1'], spec['b2']),
                          weight_decay=spec['weight_decay'])
  n_local, m, clip = spec['num_local_crops'], spec['ema_momentum'], spec['clip_grad']

  def step(views):
    globals_ = torch.cat([views['global0'], views['global1']])
    locals_ = torch.cat([views[f'local{i}'] for i in range(n_local)])
    student = head(torch.cat([bb(globals_), bb(locals_)])).chunk(2 + n_local)
    with torch.no_grad():
      teacher = head_t(bb_t(globals_)).chunk(2)
    loss = criterion(list(teacher), list(student), epoch=0)  # also updates the center
    opt.zero_grad(set_to_none=True)
    loss.backward()
    for p in params:  # DINO's clip_gradients: every tensor to norm <= clip
      if p.grad is not None:
        coef = clip / (p.grad.norm() + 1e-6)
        if coef < 1:
          p.grad.mul_(coef)
    head.cancel_last_layer_gradients(current_epoch=0)
    opt.step()
    lutils.update_momentum(bb, bb_t, m)
    lutils.update_momentum(head, head_t, m)
    return loss
  # ssl_jax's teacher: train-mode BatchNorm for a ResNet, no stochastic depth for a ViT.
  train_mods = [bb, head, head_t] + ([] if is_vit else [bb_t])
  if is_vit:
    bb_t.eval()
  return train_mods, step


def mae(spec):
  if spec['backbone'] == 'resnet18':
    raise ValueError('MAE needs a ViT')
  vit = vit_tiny(spec)
  enc = MaskedVisionTransformerTIMM(vit=vit)
  patch = spec['patch_size']
  dec = MAEDecoderTIMM(num_patches=vit.patch_embed.num_patches, patch_size=patch,
                       embed_dim=spec['embed_dim'], decoder_embed_dim=spec['decoder_dim'],
                       decoder_depth=spec['decoder_depth'],
                       decoder_num_heads=spec['decoder_heads'], mlp_ratio=4.0,
                       proj_drop_rate=0.0, attn_drop_rate=0.0)
  seq_len = enc.sequence_length
  params = [*enc.parameters(), *dec.parameters()]
  opt = torch.optim.AdamW(params, lr=spec['lr'], betas=(spec['b1'], spec['b2']),
                          weight_decay=spec['weight_decay'])
  norm_pix = spec['norm_pix_loss']

  def step(views):  # lightly's MAE example, with MAE's norm_pix_loss target
    images = views['view0']
    b = images.shape[0]
    idx_keep, idx_mask = lutils.random_token_mask(size=(b, seq_len),
                                                  mask_ratio=spec['mask_ratio'],
                                                  device=images.device)
    x = enc.encode(images=images, idx_keep=idx_keep)
    x = dec.embed(x)
    x_masked = lutils.repeat_token(dec.mask_token, (b, seq_len))
    x_masked = lutils.set_at_index(x_masked, idx_keep, x.type_as(x_masked))
    x = dec.decode(x_masked)
    pred = dec.predict(lutils.get_at_index(x, idx_mask))
    target = lutils.get_at_index(lutils.patchify(images, patch), idx_mask - 1)
    if norm_pix:
      mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
      target = (target - mean) / (var + 1e-6) ** 0.5
    loss = ((pred - target) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss
  return [enc, dec], step


METHODS = {'simclr': simclr, 'byol': byol, 'dino': dino, 'mae': mae}


def make_views(spec, batch_size, gen):
  """Normalised float views (NCHW) of the shapes ssl_jax's crops have for this method."""
  s = spec['image_size']
  rand = lambda size: torch.randn(batch_size, 3, size, size, generator=gen)
  if spec['method'] == 'dino':
    views = {'global0': rand(s), 'global1': rand(s)}
    views.update({f'local{i}': rand(spec['local_crop_size'])
                  for i in range(spec['num_local_crops'])})
    return views
  if spec['method'] == 'mae':
    return {'view0': rand(s)}
  return {'view0': rand(s), 'view1': rand(s)}


def row_spec(row: str, overrides: dict | None) -> dict:
  method, _, bb = row.partition('_')
  spec = dict(method=method, backbone=bb, image_size=32, **DEFAULTS[bb], **DEFAULTS[method])
  spec.update(overrides or {})
  return spec


def count_flops(step, views) -> int:
  from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top
  with FlopCounterMode(display=False) as counter:
    step(views)
  return int(counter.get_total_flops())


def time_row(row, spec, batch_size, steps, warmup):
  torch.manual_seed(0)
  modules, step = METHODS[spec['method']](spec)
  for mod in modules:
    mod.train()
  views = make_views(spec, batch_size, torch.Generator().manual_seed(0))
  t0 = time.perf_counter()
  for _ in range(warmup):
    step(views)
  warm_s = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    loss = step(views)
    float(loss.detach())  # eager PyTorch: everything has run once the loss is on the host
    times.append(time.perf_counter() - t0)
  flops = count_flops(step, views)  # one more step, under the counter (not timed)
  med = statistics.median(times)
  return {'row': row, 'batch': batch_size, 'steps': steps, 'ms_step': 1000 * med,
          'ms_steps': [round(1000 * t, 2) for t in times], 'img_s': batch_size / med,
          'flops': flops, 'warmup_s': warm_s, 'loss': float(loss.detach())}


def matmul_gflops(n=2048, reps=20) -> float:
  a = torch.randn(n, n)
  b = torch.randn(n, n)
  for _ in range(3):
    torch.mm(a, b)
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    torch.mm(a, b)
    times.append(time.perf_counter() - t0)
  return 2 * n ** 3 / statistics.median(times) / 1e9


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--rows', default='simclr_resnet18')
  p.add_argument('--batch_size', type=int, default=256)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--threads', type=int, default=os.cpu_count())
  p.add_argument('--spec', default='', help='JSON {row: {field: value}} overriding DEFAULTS')
  p.add_argument('--matmul', action='store_true', help='also measure float32 matmul GFLOP/s')
  p.add_argument('--check', action='store_true', help='import everything and exit')
  args = p.parse_args()
  torch.set_num_threads(args.threads)
  env = {'torch': torch.__version__, 'torchvision': torchvision.__version__,
         'timm': timm.__version__, 'lightly': lightly.__version__,
         'threads': torch.get_num_threads(), 'interop_threads': torch.get_num_interop_threads(),
         'torchvision_ops_stubbed': TORCHVISION_OPS_STUBBED,
         'ld_preload': os.environ.get('LD_PRELOAD', '')}
  if args.check:
    print(json.dumps({'check': 'ok', **env}))
    return
  if args.matmul:
    print(json.dumps({'matmul_gflops': matmul_gflops(), **env}), flush=True)
  overrides = json.loads(args.spec) if args.spec else {}
  for row in args.rows.split(','):
    spec = row_spec(row, overrides.get(row))
    print(json.dumps(time_row(row, spec, args.batch_size, args.steps, args.warmup)), flush=True)


if __name__ == '__main__':
  main()
