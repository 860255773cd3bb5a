"""``--mode=export``: the encoder of a run's latest checkpoint, without the SSL method around it.

    python -m ssl_jax.main --config=configs/simclr.py:builtin --workdir=DIR --mode=export

writes

* ``DIR/export/encoder/``  Orbax encoder-only checkpoint (``ssl_jax.export.load_encoder``);
* ``DIR/export/timm/model.safetensors`` + ``timm_config.json``: timm's layout, for ViTs and
  ResNet-18/50 (``config.export.timm``);
* ``DIR/export/export.json``: what was written.

``config.export.dir`` overrides ``DIR/export`` (a local path or a URL such as gs://...).

Repeatable: everything is written into a temporary sibling ``.export.tmp-stepN`` first and then
swapped in for the previous export (``paths.replace_dir``), so a second export replaces the first
and a killed one leaves the previous export whole.
"""
from __future__ import annotations

import jax
import numpy as np

from ssl_jax import paths
from ssl_jax.export import encoder as encoder_lib
from ssl_jax.export import timm as timm_lib
from ssl_jax.train import experiment as experiment_lib


def _host_copy(tree):
  """``tree`` as numpy arrays on every process. A parameter sharded over several processes
  (FSDP over hosts) is not addressable by one of them: it is all-gathered (a collective)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree_util.tree_map(one, tree)


def export(config, workdir: str, mesh=None, *, overrides=None) -> dict:
  """Exports the latest checkpoint's encoder; a workdir without a checkpoint is an error. The
  run's config comes from ``WORKDIR/config.json`` with ``config``'s eval-side fields (those
  named in ``overrides``, or all when it is None: workdir.reader_config); checkpoints are opened
  read-only."""
  exp = experiment_lib.Experiment.for_reading(config, workdir, mesh, overrides)
  config = exp.config
  state = exp.restore_for_reading()
  if not exp.method.has_encoder:
    raise ValueError(f'config.method.name={config.method.name!r} trains no image encoder, so '
                     'there is nothing to export')
  from ssl_jax.train import preemption  # pylint: disable=g-import-not-at-top
  out_dir = paths.as_path(config.get('export', {}).get('dir', '')
                          or paths.as_path(exp.workdir) / 'export')
  backbone = exp.method.backbone
  variables = _host_copy(exp.method.encoder_variables(state.params, state.buffers))
  step = int(np.asarray(state.step.addressable_data(0)))  # replicated; also multi-process
  result = {'step': step, 'method': config.method.name, 'backbone': config.model.backbone}
  # The same name in every process (they all write the encoder's Orbax checkpoint into it).
  tmp = paths.temp_sibling(out_dir, f'tmp-step{step}')
  is_main = jax.process_index() == 0
  if is_main and tmp.exists():   # left by a killed export
    tmp.rmtree()
  preemption.barrier('ssl_jax_export_clean')
  encoder_input = exp.method.encoder_input()   # the eval preprocessing: colour, mean / std
  encoder_lib.save_encoder(tmp / 'encoder', backbone, variables, **encoder_input,
                           model_config=config.model)
  result['encoder'] = str(out_dir / 'encoder')
  if config.get('export', {}).get('timm', True) and is_main:
    try:
      arch, _ = timm_lib.timm_model_args(backbone)
      timm_lib.export_timm(backbone, variables, tmp / 'timm', encoder_input)
      result['timm'] = str(out_dir / 'timm' / 'model.safetensors')
      result['timm_architecture'] = arch
    except (ValueError, TypeError) as e:   # e.g. a width-16 ResNet has no timm twin
      result['timm_skipped'] = str(e)
  if is_main:
    paths.write_json_atomic(tmp / 'export.json', result)
  preemption.barrier('ssl_jax_export_written')
  if is_main:
    paths.replace_dir(tmp, out_dir)
  preemption.barrier('ssl_jax_export_done')
  return result
