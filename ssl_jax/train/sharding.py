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


FSDP_AXIS = 'fsdp'


def _leaf_spec(shape, fsdp_size: int, min_size: int) -> P:
  """FSDP rule: split the largest dimension divisible by the fsdp axis; small leaves replicate."""
  if fsdp_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  dims = sorted(range(len(shape)), key=lambda d: -shape[d])
  for d in dims:
    if shape[d] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[d] = FSDP_AXIS
      return P(*spec)
  return P()


def state_shardings(mesh, abstract_state, mesh_cfg=None):
  """Shardings of the train state (params, optimizer state, teacher, buffers alike).

  Data parallel (no 'fsdp' axis): everything replicated. With a 'fsdp' mesh axis every leaf of at
  least ``mesh_cfg.fsdp_min_size`` elements is split along its largest dimension divisible by the
  axis size (ZeRO-3 style): XLA all-gathers weights where they are used and reduce-scatters the
  gradients. Regex rules ``mesh_cfg.rules = (('pattern', 'replicate'|'fsdp'), ...)`` on the
  leaf's path ('params/backbone/conv1/kernel', 'buffers/queue', ...) override the default; the
  first match wins.
  """
  import re  # pylint: disable=g-import-not-at-top
  fsdp_size = mesh.shape.get(FSDP_AXIS, 1)
  min_size = int(mesh_cfg.get('fsdp_min_size', 2**14)) if mesh_cfg is not None else 2**14
  rules = [(re.compile(p), kind) for p, kind in (mesh_cfg.get('rules', ()) if mesh_cfg else ())]
  for _, kind in rules:
    if kind not in ('replicate', 'fsdp'):
      raise ValueError(f"config.mesh.rules: {kind!r} is not 'replicate' or 'fsdp'")

  def leaf(path, x):
    name = '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
                    for k in path)
    kind = 'fsdp'
    for pattern, rule_kind in rules:
      if pattern.search(name):
        kind = rule_kind
        break
    shape = getattr(x, 'shape', ())
    spec = _leaf_spec(shape, fsdp_size, min_size) if kind == 'fsdp' else P()
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(leaf, abstract_state)
