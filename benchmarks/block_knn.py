"""Where in a ViT are the kNN-useful features? Every block's readouts, a run against a random init.

    python benchmarks/block_knn.py configs/simmim.py:builtin --workdir=RUN [--set field=value ...]

RUN is a finished (or interrupted) run of that config (same ``--set`` overrides as its training,
e.g. ``benchmarks/quality.py ... --keep DIR``). Its latest checkpoint and a random initialisation
of the same config go through the ViT encoder on the eval splits (centre crops, no mask), and each
block's output is read out three ways: the mean of its patch tokens, raw (``bK_mean``) and through
the encoder's final LayerNorm (``bK_mean_norm``; for the last block this is the masked-image
methods' eval feature), and its [CLS] token through the final norm (``bK_cls``; for the last
block, the ViT's pooled output). For a method that owns a mask token (SimMIM, BEiT, iBOT,
data2vec) the images are also encoded *masked* (the method's mask ratio, in its mask patches where
it has them, one fixed mask per batch position) and the final patch tokens are averaged over the
masked positions (``mask_tokens``) and the visible ones (``visible_tokens``): where a mask-token
method does its inference. Each readout is scored with the library's weighted kNN (``eval.knn_k``,
``eval.knn_temperature``), raw and standardised with the training features' mean and std, and
printed as one table row: kNN top-1 of the run, of the random init, and the ratio of their kNN
errors (the acceptance bar is <= 0.667). docs/research-notes.md ("SimMIM and the kNN bar") uses it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.quality import apply_overrides, load_config  # pylint: disable=wrong-import-position
from ssl_jax.data import sources  # pylint: disable=wrong-import-position
from ssl_jax.eval import features as features_lib, knn  # pylint: disable=wrong-import-position
from ssl_jax.methods.masked import simmim  # pylint: disable=wrong-import-position
from ssl_jax.models import vit as vit_lib  # pylint: disable=wrong-import-position


def readout_mask(method, batch: int, image_size: int, rng):
  """(B, N) float mask (1 = hidden) at the method's mask ratio: in its mask patches when it has
  them (SimMIM's ``mask_grid`` x ``scale``), else per model patch; 0.5 when the ratio is not one
  number."""
  ratio = getattr(method, 'mask_ratio', 0.5)
  ratio = float(ratio) if isinstance(ratio, (int, float)) else 0.5
  grid, scale = getattr(method, 'mask_grid', None), getattr(method, 'scale', 1)
  if grid is None:
    grid, scale = image_size // method.backbone.patch_size, 1
  return simmim.simmim_masks(rng, batch, grid, scale, ratio)


def readouts(method, params, images_uint8, mask_rng=None) -> dict:
  """{name: (B, D) float32} readouts of every block (see the module docstring)."""
  if not isinstance(getattr(method, 'backbone', None), vit_lib.ViT):
    raise ValueError(f'block_knn reads ViT blocks; {type(method).__name__} has backbone '
                     f'{type(getattr(method, "backbone", None)).__name__}')
  x = method.normalize(images_uint8)

  def body(mod, x, mask=None, token=None):
    out = mod.encode(x, return_layers=True, mask=mask, mask_token=token)
    p = mod.num_prefix_tokens
    res = {}
    for i, h in enumerate(out['layers']):
      normed = mod.norm(h)
      res[f'b{i}_mean'] = h[:, p:].mean(axis=1)
      res[f'b{i}_mean_norm'] = normed[:, p:].mean(axis=1)
      if p:
        res[f'b{i}_cls'] = normed[:, 0]
    return res, out['patches']

  bb = {'params': params['backbone']}
  res, _ = method.backbone.apply(bb, x, method=body)
  if 'mask_token' in params:
    mask = readout_mask(method, x.shape[0], x.shape[1],
                        mask_rng if mask_rng is not None else jax.random.PRNGKey(0))
    _, patches = method.backbone.apply(bb, x, mask, params['mask_token'], method=body)
    w = mask[..., None]
    res['mask_tokens'] = (patches * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
    res['visible_tokens'] = (patches * (1 - w)).sum(1) / jnp.maximum((1 - w).sum(1), 1.0)
  return {k: v.astype(jnp.float32) for k, v in res.items()}


def standardise(train, test):
  """z-score both with the training features' per-dimension mean and std."""
  mu, sd = train.mean(0), train.std(0) + 1e-6
  return (train - mu) / sd, (test - mu) / sd


def score_all(tr: dict, y_tr, te: dict, y_te, *, k: int, temperature: float,
              num_classes: int) -> dict:
  """{readout or readout_z: kNN top-1}."""
  out = {}
  for name in tr:
    for suffix, (a, b) in (('', (tr[name], te[name])),
                           ('_z', standardise(tr[name], te[name]))):
      out[name + suffix] = float(knn.knn_top1(a, y_tr, b, y_te, k=k, temperature=temperature,
                                              num_classes=num_classes))
  return out


def extract(config, workdir: str, *, require_checkpoint: bool):
  """(train readouts, train labels, test readouts, test labels, step) of ``workdir``'s latest
  checkpoint (a fresh init when it has none and ``require_checkpoint`` is False)."""
  from ssl_jax.train import experiment  # pylint: disable=g-import-not-at-top
  from ssl_jax.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  try:   # the run's saved config and latest checkpoint, read-only
    exp = experiment.Experiment.for_reading(config, workdir)
    state = exp.restore_for_reading()
  except workdir_lib.NoCheckpointError:
    if require_checkpoint:
      raise ValueError(f'--workdir={workdir} has no checkpoint of {config.method.name}') from None
    exp = experiment.Experiment(config, workdir)
    state = exp.initial_state()
  config = exp.config
  method = exp.method
  shapes = jax.eval_shape(lambda p, im: readouts(method, p, im), state.params,
                          jax.ShapeDtypeStruct((2, config.data.image_size,
                                                config.data.image_size, 3), jnp.uint8))
  names = list(shapes)
  widths = [shapes[n].shape[1] for n in names]
  def fn(params, buffers, images):
    del buffers
    res = readouts(method, params, images)
    return jnp.concatenate([res[n] for n in names], axis=1)   # eval_shape sorted the names

  fn = jax.jit(fn)
  kw = dict(mesh=exp.mesh, image_size=config.data.image_size,
            batch_size=config.eval.batch_size, crop_frac=config.data.eval_crop_frac)
  cut = np.cumsum(widths)[:-1]

  def split(f):
    return dict(zip(names, np.split(f, cut, axis=1)))

  f_tr, y_tr = features_lib.extract_features(
      fn, state.params, state.buffers,
      sources.get_source(config.data, config.data.eval_train_split), **kw)
  f_te, y_te = features_lib.extract_features(
      fn, state.params, state.buffers, sources.get_source(config.data, config.data.eval_split),
      **kw)
  return split(f_tr), y_tr, split(f_te), y_te, int(jax.device_get(state.step))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('config', help='path.py[:variant]')
  parser.add_argument('--workdir', required=True, help='the trained run')
  parser.add_argument('--set', action='append', default=[], help='field=value override')
  args = parser.parse_args()
  config = apply_overrides(load_config(args.config), args.set)
  nc = sources.get_source(config.data, config.data.eval_split).num_classes
  kw = dict(k=config.eval.knn_k, temperature=config.eval.knn_temperature, num_classes=nc)
  tr, y_tr, te, y_te, step = extract(config, args.workdir, require_checkpoint=True)
  run = score_all(tr, y_tr, te, y_te, **kw)
  with tempfile.TemporaryDirectory() as empty:
    tr, y_tr, te, y_te, _ = extract(config, empty, require_checkpoint=False)
    rand = score_all(tr, y_tr, te, y_te, **kw)
  print(f'{args.config} at step {step}; kNN k={config.eval.knn_k}')
  print('| readout | kNN run | kNN random | err ratio |')
  print('|---|---|---|---|')
  for name, acc in run.items():
    ratio = (1 - acc) / max(1 - rand[name], 1e-9)
    print(f'| {name} | {acc:.3f} | {rand[name]:.3f} | {ratio:.2f} |')


if __name__ == '__main__':
  main()
