"""Ahead-of-time memory check: compile a config's train step for a mesh without data or weights.

    python -m ssl_jax.main --config=configs/mae.py:imagenet --workdir=/tmp/mem --mode=memory \
        --config.data.batch_size=4096 --config.mesh.axes="('data','fsdp')" \
        --config.mesh.shape="(-1,4)"

builds the state and the batch as abstract shapes (``jax.ShapeDtypeStruct`` with their
shardings; nothing is allocated, no dataset is read), lowers and compiles the real jitted step
(``jit(step).lower(...).compile()``) and reports what XLA says one device needs: arguments
(sharded state + batch), outputs, temporaries, and their sum, beside the parameter and optimizer
bytes per device implied by the shardings.

The numbers are those of the backend it compiles for. Run it on the target (one host of the TPU
slice, with the slice's device count) for exact numbers. On a CPU with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` it compiles the same partitioned program for
N devices: a good estimate of the per-device footprint, but XLA:CPU fuses and pads differently
from XLA:TPU/GPU, so leave a margin (~20%).
"""
from __future__ import annotations

import jax
import numpy as np

from ssl_jax import config as config_lib
from ssl_jax.train import experiment, sharding
from ssl_jax.train import step as step_lib

GIB = 2.0 ** 30


def abstract_batch(config, method, mesh) -> dict:
  """The global training batch as sharded ShapeDtypeStructs: the method's host transform's batch
  spec (one uint8 image array per crop, or the audio clips), plus int32 labels and example
  indices (what the input pipeline delivers)."""
  s = sharding.batch_sharding(mesh)
  spec = method.host_transform().batch_spec(config.data.batch_size)
  # On device a numpy int64 becomes int32 unless jax_enable_x64: the dtype the step really gets.
  return {k: jax.ShapeDtypeStruct(shape, jax.dtypes.canonicalize_dtype(dtype), sharding=s)
          for k, (shape, dtype) in spec.items()}


def _bytes_per_device(abstract_tree, shardings) -> int:
  total = 0
  for a, sh in zip(jax.tree_util.tree_leaves(abstract_tree), jax.tree_util.tree_leaves(shardings)):
    shard = sh.shard_shape(a.shape) if a.shape else ()
    total += int(np.prod(shard, dtype=np.int64)) * np.dtype(a.dtype).itemsize
  return total


def memory_report(config, mesh=None) -> dict:
  """Compiles ``config``'s train step for ``mesh`` on abstract inputs; returns per-device bytes."""
  mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh)
  config_lib.validate(config, num_devices=mesh.size)
  method = experiment.build_method(config)
  tx, schedule = method.build_optimizer(config.train.steps)
  batch = abstract_batch(config, method, mesh)
  abstract_state = jax.eval_shape(
      lambda rng, sample: experiment.create_train_state(method, tx, rng, sample),
      jax.random.PRNGKey(config.seed), batch)
  state_sharding = sharding.state_shardings(mesh, abstract_state, config.mesh)
  state_in = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
      state_sharding)
  step = step_lib.jit_train_step(method, config, mesh, state_sharding, schedule)
  compiled = step.lower(state_in, batch).compile()
  stats = compiled.memory_analysis()
  report = {
      'method': config.method.name, 'backbone': config.model.backbone,
      'batch_size': config.data.batch_size, 'mesh': dict(mesh.shape),
      'backend': jax.default_backend(), 'devices': mesh.size,
      'params_bytes_per_device': _bytes_per_device(abstract_state.params, state_sharding.params),
      'opt_state_bytes_per_device': _bytes_per_device(abstract_state.opt_state,
                                                      state_sharding.opt_state),
      'buffers_bytes_per_device': _bytes_per_device(abstract_state.buffers,
                                                    state_sharding.buffers),
  }
  if stats is not None:
    args, out = int(stats.argument_size_in_bytes), int(stats.output_size_in_bytes)
    temp, alias = int(stats.temp_size_in_bytes), int(stats.alias_size_in_bytes)
    report.update(argument_bytes=args, output_bytes=out, temp_bytes=temp, alias_bytes=alias,
                  # donated state aliases its output: count it once.
                  total_bytes_per_device=args + out - alias + temp)
  cost = compiled.cost_analysis()
  if isinstance(cost, list):
    cost = cost[0] if cost else None
  if cost and 'flops' in cost:
    report['flops_per_step_per_device'] = float(cost['flops'])
  return report


def format_report(report: dict) -> str:
  """The report as a few aligned lines (GiB)."""
  lines = [f"{report['method']} / {report['backbone']}, batch {report['batch_size']}, mesh "
           f"{report['mesh']} ({report['backend']}):"]
  for key in ('params_bytes_per_device', 'opt_state_bytes_per_device', 'buffers_bytes_per_device',
              'argument_bytes', 'output_bytes', 'alias_bytes', 'temp_bytes',
              'total_bytes_per_device'):
    if key in report:
      lines.append(f'  {key:28s} {report[key] / GIB:10.3f} GiB')
  return '\n'.join(lines)
