"""``--mode=export``: the encoder of a run's latest checkpoint, without the SSL method around it.

    python -m ssl_jax.main --config=configs/simclr.py:builtin --workdir=DIR --mode=export

writes

* ``DIR/export/encoder/``  Orbax encoder-only checkpoint (``ssl_jax.export.load_encoder``);
* ``DIR/export/timm/model.safetensors`` + ``timm_config.json``: timm's layout, for ViTs and
  width-64 ResNets (``config.export.timm``);
* ``DIR/export/export.json``: what was written.

``config.export.dir`` overrides ``DIR/export``.
"""
from __future__ import annotations

import json
import os

import jax

from ssl_jax.data import augment
from ssl_jax.export import encoder as encoder_lib
from ssl_jax.export import timm as timm_lib
from ssl_jax.train import experiment as experiment_lib


def export(config, workdir: str, mesh=None, *, overrides=None) -> dict:
  """Exports the latest checkpoint's encoder; a workdir without a checkpoint is an error. The
  run's config comes from ``WORKDIR/config.json`` with ``config``'s eval-side fields (those
  named in ``overrides``, or all when it is None: workdir.reader_config); checkpoints are opened
  read-only."""
  exp = experiment_lib.Experiment.for_reading(config, workdir, mesh, overrides)
  config = exp.config
  state = exp.restore_for_reading()
  out_dir = config.get('export', {}).get('dir', '') or os.path.join(exp.workdir, 'export')
  if not exp.method.has_encoder:
    raise ValueError(f'config.method.name={config.method.name!r} trains no image encoder, so '
                     'there is nothing to export')
  backbone = exp.method.backbone
  variables = exp.method.encoder_variables(state.params, state.buffers)
  result = {'step': int(jax.device_get(state.step)), 'method': config.method.name,
            'backbone': config.model.backbone}
  result['encoder'] = encoder_lib.save_encoder(
      os.path.join(out_dir, 'encoder'), backbone, variables, mean=augment.IMAGENET_MEAN,
      std=augment.IMAGENET_STD, model_config=config.model)
  if config.get('export', {}).get('timm', True) and jax.process_index() == 0:
    try:
      arch, _ = timm_lib.timm_model_args(backbone)
      result['timm'] = timm_lib.export_timm(backbone, variables, os.path.join(out_dir, 'timm'))
      result['timm_architecture'] = arch
    except (ValueError, TypeError) as e:   # e.g. a width-16 ResNet has no timm twin
      result['timm_skipped'] = str(e)
  if jax.process_index() == 0:
    with open(os.path.join(out_dir, 'export.json'), 'w') as f:
      json.dump(result, f, indent=2)
  return result
