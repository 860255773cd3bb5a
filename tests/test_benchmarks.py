"""The quality benchmark's helpers: --set parsing and the DINO/iBOT collapse check."""
import importlib.util
import math
import os

import ml_collections
import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                     'quality.py')


@pytest.fixture(scope='module')
def quality():
  spec = importlib.util.spec_from_file_location('_quality_benchmark', _PATH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_set_overrides_parse_bools_tuples_and_numbers(quality):
  c = ml_collections.ConfigDict({'method': {'flag': True, 'scale': (0.1, 1.0), 'n': 3,
                                            'lr': 0.5, 'name': 'a'}})
  quality.apply_overrides(c, ['method.flag=False', 'method.scale=(0.5, 1.0)', 'method.n=7',
                              'method.lr=1e-3', 'method.name=b'])
  assert c.method.flag is False and c.method.scale == (0.5, 1.0)
  assert (c.method.n, c.method.lr, c.method.name) == (7, 1e-3, 'b')
  quality.apply_overrides(c, ['method.flag=True'])
  assert c.method.flag is True
  with pytest.raises(ValueError, match='method.flag is a bool'):
    quality.apply_overrides(c, ['method.flag=0'])


def test_collapse_check_verdicts(quality):
  k = 1024
  log_k = math.log(k)
  ok = quality.collapse_check({'teacher_entropy': 4.6, 'teacher_marginal_entropy': 5.9}, k)
  assert ok['verdict'] == 'no collapse' and ok['log_k'] == pytest.approx(log_k)
  uniform = {'teacher_entropy': 0.99 * log_k, 'teacher_marginal_entropy': log_k}
  assert quality.collapse_check(uniform, k)['verdict'] == 'uniform collapse'
  one_hot = {'teacher_entropy': 0.01, 'teacher_marginal_entropy': 0.01}
  assert quality.collapse_check(one_hot, k)['verdict'] == 'one-hot collapse'
  # sharp per image but every image on the same prototype
  same = {'teacher_entropy': 2.0, 'teacher_marginal_entropy': 0.2}
  assert quality.collapse_check(same, k)['verdict'] == 'one-hot collapse'
  assert quality.collapse_check({'grad_norm': 1.0}, k) is None
