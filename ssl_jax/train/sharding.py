"""Device mesh, shardings and host-to-global batch assembly (jax.jit + NamedSharding; no pmap)."""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
  """A mesh from ``config.mesh`` (``shape`` with one -1 for "the rest", ``axes`` names).

  Axis types are Auto: shardings propagate through the program as in classic pjit, so the method
  code stays sharding-agnostic. The first axis is the data axis the batch is split over.
  """
  devices = devices if devices is not None else jax.devices()
  shape = list(mesh_cfg.shape)
  axes = tuple(mesh_cfg.axes)
  if len(shape) != len(axes):
    raise ValueError(f'config.mesh.shape={tuple(shape)} and config.mesh.axes={axes} differ in '
                     'length')
  if shape.count(-1) > 1:
    raise ValueError(f'config.mesh.shape={tuple(shape)} has more than one -1')
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f'config.mesh.shape={tuple(shape)} does not divide {len(devices)} devices')
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f'config.mesh.shape={tuple(shape)} needs {int(np.prod(shape))} devices, '
                     f'{len(devices)} are available')
  return jax.make_mesh(tuple(shape), axes, axis_types=(AxisType.Auto,) * len(axes),
                       devices=devices)


def batch_sharding(mesh) -> NamedSharding:
  """Leading (batch) dimension split over every mesh axis that holds data (here: all of them)."""
  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(mesh, local_batch):
  """Assembles this process's numpy batch into one global jax.Array sharded on its first axis."""
  sharding = batch_sharding(mesh)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def state_shardings(mesh, abstract_state):
  """Shardings of the train state: replicated (pure data parallelism)."""
  rep = replicated(mesh)
  return jax.tree_util.tree_map(lambda _: rep, abstract_state)
