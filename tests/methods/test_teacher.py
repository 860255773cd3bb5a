"""methods/teacher.py, the one EMA teacher: the update formula on a tiny tree, the schedule
endpoints, the buffer layout, and that every method with a teacher keeps it there. No compile
of a train step: plain arrays and ``Method.init`` under ``jax.eval_shape``."""
import math
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax import methods
from ssl_jax.methods import common
from ssl_jax.methods import teacher
from tests import helpers


def tiny_tree(scale):
  return {'backbone': {'w': scale * jnp.arange(6.0).reshape(2, 3), 'b': jnp.full((3,), scale)},
          'projector': {'w': jnp.full((3, 2), 2.0 * scale)}}


def test_ema_update_formula():
  target, online = tiny_tree(1.0), tiny_tree(-3.0)
  got = teacher.ema_update(target, online, 0.9)
  want = jax.tree_util.tree_map(lambda t, o: 0.9 * np.asarray(t) + 0.1 * np.asarray(o),
                                target, online)
  helpers.assert_trees_close(got, want, rtol=1e-6, atol=1e-6)
  # m = 1 keeps the target bit for bit; m = 0 copies the online network.
  helpers.assert_trees_close(teacher.ema_update(target, online, 1.0), target, 0, 0)
  helpers.assert_trees_close(teacher.ema_update(target, online, 0.0), online, 0, 0)


def test_momentum_schedule_endpoints():
  hp = ml_collections.ConfigDict({'momentum': 0.99, 'momentum_final': 1.0})
  cos = teacher.momentum_schedule(hp, 10)
  np.testing.assert_allclose([cos(0), cos(5), cos(10), cos(20)], [0.99, 0.995, 1.0, 1.0],
                             rtol=1e-7)
  np.testing.assert_allclose(cos(2), 1 - 0.01 * (math.cos(math.pi * 0.2) + 1) / 2, rtol=1e-7)
  lin = teacher.momentum_schedule(hp, 10, shape='linear')
  np.testing.assert_allclose([lin(0), lin(2), lin(10), lin(30)], [0.99, 0.992, 1.0, 1.0],
                             rtol=1e-7)
  const = teacher.momentum_schedule(teacher.EMAHparams(momentum=0.999, momentum_final=0.999), 10)
  np.testing.assert_allclose([const(0), const(7), const(10)], [0.999] * 3, rtol=1e-7)
  with pytest.raises(ValueError, match="shape='step'"):
    teacher.momentum_schedule(hp, 10, shape='step')


def test_layout_from_student_and_stats():
  params = {**tiny_tree(1.0), 'predictor': {'w': jnp.ones((2, 2))}}
  stats = {'backbone': {}, 'projector': {'bn0': {'mean': jnp.zeros(2)}}, 'predictor': {}}
  t = teacher.from_student(params, ('backbone', 'projector'), stats)
  # Params of the named modules only; statistics only for those with BatchNorm.
  assert set(t) == {'params', 'batch_stats'}
  assert set(t['params']) == {'backbone', 'projector'} and set(t['batch_stats']) == {'projector'}
  helpers.assert_trees_close(t['params'], {k: params[k] for k in ('backbone', 'projector')}, 0, 0)
  assert teacher.stats_of(t, 'backbone') == {}
  new = {'bn0': {'mean': jnp.ones(2)}}
  t2 = teacher.with_stats(t, backbone={}, projector=new)
  assert set(t2['batch_stats']) == {'projector'} and t2['batch_stats']['projector'] is new
  assert t2['params'] is t['params'] and t['batch_stats']['projector'] is not new
  # A teacher without BatchNorm has no 'batch_stats' key, before and after an update.
  vit = teacher.from_student(params, ('backbone',))
  assert set(vit) == {'params'} and teacher.with_stats(vit, backbone={}) == vit


def test_update_moves_the_teacher_towards_the_student_at_the_step_just_made():
  student = tiny_tree(2.0)
  buffers = {'teacher': teacher.from_student(tiny_tree(1.0), ('backbone',)), 'queue': jnp.ones(3)}
  state = types.SimpleNamespace(step=jnp.asarray(3), params=student, buffers=buffers)
  state.replace = lambda **kw: types.SimpleNamespace(**{**vars(state), **kw})
  seen = []
  fn = lambda step: (seen.append(int(step)), 0.75)[1]
  out = teacher.update(state, fn)
  assert seen == [2], 'apply_gradients advanced step: the update just made is step - 1'
  want = jax.tree_util.tree_map(lambda t, o: 0.75 * t + 0.25 * o, tiny_tree(1.0)['backbone'],
                                student['backbone'])
  helpers.assert_trees_close(out.buffers['teacher']['params'], {'backbone': want}, 1e-6, 1e-6)
  assert out.buffers['queue'] is buffers['queue']
  teacher.update(state, fn, step_offset=1)
  assert seen[-1] == 3   # MoCo v3's offset


def test_common_reexports_the_teacher():
  """Code written against common.py (before teacher.py) keeps working."""
  assert common.ema_update is teacher.ema_update
  assert common.momentum_schedule is teacher.momentum_schedule
  assert common.EMAHparams is teacher.EMAHparams


EMA_METHODS = ('byol', 'moco', 'mocov3', 'dino', 'ibot', 'data2vec', 'cmae', 'ijepa', 'dinov2',
               'msn')


@pytest.mark.parametrize('name', EMA_METHODS)
def test_every_ema_method_keeps_its_teacher_in_the_one_layout(name):
  import importlib  # pylint: disable=g-import-not-at-top
  c = helpers.tiny(importlib.import_module(f'configs.{name}').get_config('builtin'), steps=2)
  method = methods.method_class(name)(c)
  batch = {s.name: jnp.zeros((2, s.size, s.size, 3), jnp.uint8) for s in method.crop_specs()}
  params, buffers = jax.eval_shape(lambda: method.init(jax.random.PRNGKey(0), batch))
  assert 'target' not in buffers and set(buffers['teacher']) <= {'params', 'batch_stats'}
  for module, tree in buffers['teacher']['params'].items():
    assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(params[module])
  for stats in buffers['teacher'].get('batch_stats', {}).values():
    assert jax.tree_util.tree_leaves(stats)
