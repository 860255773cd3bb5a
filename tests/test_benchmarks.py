"""The benchmarks' helpers: quality.py's --set parsing and DINO/iBOT collapse check;
throughput.py's MFU rows, peak table and MFU column."""
import importlib.util
import math
import os

import ml_collections
import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                     'quality.py')


def _load(name, path):
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.fixture(scope='module')
def quality():
  return _load('_quality_benchmark', _PATH)


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


# --------------------------------------------------------------------------- throughput.py (MFU)

_THROUGHPUT = os.path.join(os.path.dirname(_PATH), 'throughput.py')


@pytest.fixture(scope='module')
def throughput():
  return _load('_throughput_benchmark', _THROUGHPUT)


@pytest.mark.parametrize('kind,tflops', [
    ('NVIDIA H100 80GB HBM3', 989.4), ('NVIDIA H100 PCIe', 756.0), ('NVIDIA H200', 989.4),
    ('NVIDIA A100-SXM4-80GB', 312.0), ('NVIDIA L4', 121.0), ('TPU v4', 275.0),
    ('TPU v5 lite', 197.0), ('TPU v5', 459.0), ('TPU v6 lite', 918.0), ('cpu', None),
    ('NVIDIA GeForce RTX 4090', None)])
def test_peak_tflops_by_device_kind(throughput, kind, tflops):
  assert throughput.peak_tflops(kind) == tflops


def test_mfu_is_achieved_over_summed_peak(throughput):
  # 4 devices of 100 TFLOP/s; 2e14 FLOPs in 1 s -> half of 4e14.
  assert throughput.mfu(2e14, 1.0, 4, 100.0) == pytest.approx(0.5)
  assert throughput.mfu(2e14, 0.5, 1, 1000.0) == pytest.approx(0.4)
  assert throughput.mfu(None, 1.0, 1, 100.0) is None
  assert throughput.mfu(1e12, 1.0, 1, None) is None


def test_mfu_rows_are_the_papers_vit_b16_steps(throughput):
  from ssl_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  mae = throughput.make_config('mae_vit_base16', 64)
  dino = throughput.make_config('dino_vit_base16', 64)
  for c in (mae, dino):
    assert (c.model.backbone, c.model.patch_size, c.data.image_size) == ('vit_base', 16, 224)
    assert c.model.dtype == 'bfloat16' and c.data.batch_size == 64
    config_lib.validate(c, num_devices=1)
  m = mae.method
  assert (m.mask_ratio, m.decoder_dim, m.decoder_depth, m.decoder_heads) == (0.75, 512, 8, 16)
  m = dino.method
  assert (m.num_local_crops, m.local_crop_size, m.out_dim) == (10, 96, 65536)
  # The CPU rows keep float32 (lightly's side) unless asked.
  assert throughput.make_config('mae_vit_tiny', 8).model.dtype == 'float32'
  assert throughput.make_config('mae_vit_tiny', 8, dtype='bfloat16').model.dtype == 'bfloat16'


def test_table_has_an_mfu_column_when_a_peak_is_known(throughput, capsys):
  import argparse  # pylint: disable=g-import-not-at-top
  row = {'row': 'mae_vit_base16', 'batch': 256, 'ms_step': 500.0, 'img_s': 512.0, 'flops': 3e13,
         'gflops_s': 6e4, 'mfu': 0.0606, 'dtype': 'bfloat16'}
  args = argparse.Namespace(vs_lightly=False, peak_tflops=0.0, steps=10, warmup=2, augment='on',
                            load=(0.0, 0.0))
  throughput.print_table([row], args, 100.0, None, peak_device=989.4)
  out = capsys.readouterr().out
  assert '| dtype | MFU |' in out and '| MAE | ViT-B/16, 224 px |' in out
  assert '| bfloat16 | 6.1% |' in out and '989.4 TFLOP/s' in out
  throughput.print_table([dict(row, mfu=None)], args, 100.0, None, peak_device=989.4)
  assert '| bfloat16 | - |' in capsys.readouterr().out     # no FLOP count: no MFU
  throughput.print_table([row], args, 100.0, None)   # CPU: no peak, no column
  assert 'MFU' not in capsys.readouterr().out


def test_mfu_rows_refuse_vs_lightly(throughput):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  proc = subprocess.run([sys.executable, _THROUGHPUT, '--rows', 'mfu', '--vs_lightly'],
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 2
  assert 'lightly_step.py has no mae_vit_base16 step' in proc.stderr


def test_cost_analysis_of_a_partitioned_step_is_one_devices_share(throughput):
  """time_ours multiplies step_flops by the mesh size: XLA counts one device's program."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  mesh = jax.make_mesh((8,), ('data',))
  x = jax.device_put(jnp.ones((64, 256)), NamedSharding(mesh, PartitionSpec('data')))
  compiled = jax.jit(lambda x, w: (x @ w).sum()).lower(x, jnp.ones((256, 512))).compile()
  per_device = 2 * (64 // 8) * 256 * 512
  assert throughput.step_flops(compiled) == pytest.approx(per_device, rel=0.01)
