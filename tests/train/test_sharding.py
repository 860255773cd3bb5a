"""Mesh construction and FSDP: data parallel and FSDP give the same steps on 8 devices."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from ml_collections import ConfigDict

from configs import simclr
from ssl_jax.train import loop, sharding
from tests import helpers


def _run(config, mesh, steps=2):
  exp = loop.Experiment(config, '/tmp/unused_sharding_test', mesh)
  state = exp.initial_state()
  losses = []
  for i in range(steps):
    state, m = exp.step_fn(state, sharding.global_batch(mesh, exp.train_ds[i]))
    losses.append(float(m['loss']))
  return exp, state, losses


def test_fsdp_equals_data_parallel():
  c = helpers.tiny(simclr.get_config('builtin'))
  c.method.proj_hidden_dim, c.method.proj_dim = 64, 16
  _, s_dp, l_dp = _run(c, helpers.mesh(8))
  c.mesh.shape, c.mesh.axes, c.mesh.fsdp_min_size = (2, 4), ('data', 'fsdp'), 64
  mesh = sharding.make_mesh(c.mesh)
  exp, s_fsdp, l_fsdp = _run(c, mesh)
  # Parameters really are split: the projector's 64x16 kernel (and its momentum) over 'fsdp'.
  kernel = s_fsdp.params['projector']['fc1']['kernel']
  assert kernel.sharding.spec == P('fsdp', None)
  assert kernel.addressable_shards[0].data.shape == (16, 16)
  np.testing.assert_allclose(l_dp, l_fsdp, rtol=1e-5)
  helpers.assert_trees_close(s_dp.params, s_fsdp.params, rtol=1e-3, atol=1e-4)


def test_rules_override_and_min_size():
  mesh = sharding.make_mesh(ConfigDict({'shape': (2, 4), 'axes': ('data', 'fsdp')}))
  tree = {'params': {'big': jax.ShapeDtypeStruct((8, 4096), np.float32),
                     'small': jax.ShapeDtypeStruct((4, 4), np.float32),
                     'odd': jax.ShapeDtypeStruct((3, 5115), np.float32)},
          'buffers': {'queue': jax.ShapeDtypeStruct((4096, 16), np.float32)}}
  cfg = ConfigDict({'fsdp_min_size': 1024, 'rules': (('queue', 'replicate'),)})
  specs = jax.tree_util.tree_map(lambda s: s.spec, sharding.state_shardings(mesh, tree, cfg))
  assert specs['params']['big'] == P(None, 'fsdp')
  assert specs['params']['small'] == P()
  assert specs['params']['odd'] == P()            # no dimension divisible by 4
  assert specs['buffers']['queue'] == P()
  with pytest.raises(ValueError, match='config.mesh.rules'):
    sharding.state_shardings(mesh, tree, ConfigDict({'rules': (('x', 'shard'),)}))


@pytest.mark.parametrize('shape,axes,message', [
    ((3,), ('data',), 'needs 3 devices'),
    ((-1, -1), ('data', 'fsdp'), 'more than one -1'),
    ((2,), ('data', 'fsdp'), 'differ in length'),
])
def test_bad_mesh_named(shape, axes, message):
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(ConfigDict({'shape': shape, 'axes': axes}))
