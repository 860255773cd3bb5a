"""ssl_jax.runtime.setup: the process setup ``python -m ssl_jax.main`` does before its first JAX
computation (XLA flags from the config, then jax.distributed). The flag and huge-page helpers it
builds on are tested in test_launch.py."""
import os

import pytest

from ssl_jax import config as config_lib
from ssl_jax import runtime


def test_setup_sets_the_eigen_dots_flag_for_a_vit_only(monkeypatch):
  c = config_lib.base_config()
  c.model.backbone = 'vit_tiny'
  monkeypatch.setenv('XLA_FLAGS', '--a=1')
  runtime.setup(c)
  assert os.environ['XLA_FLAGS'] == f'--a=1 {runtime.EIGEN_DOTS_FLAG}'
  c.model.backbone = 'resnet18'
  monkeypatch.setenv('XLA_FLAGS', '--a=1')
  runtime.setup(c)
  assert os.environ['XLA_FLAGS'] == '--a=1'


def test_single_process_needs_no_distributed_runtime(monkeypatch):
  monkeypatch.delenv('SLURM_NTASKS', raising=False)
  monkeypatch.delenv('TPU_WORKER_HOSTNAMES', raising=False)
  assert runtime.initialize_distributed() is False
  monkeypatch.setenv('SLURM_NTASKS', '1')
  monkeypatch.setenv('TPU_WORKER_HOSTNAMES', 'only-one')
  assert runtime.initialize_distributed() is False


@pytest.mark.parametrize('num_processes,process_id', [(0, 0), (2, 2), (2, -1)])
def test_explicit_distributed_needs_a_consistent_process_id(num_processes, process_id):
  with pytest.raises(ValueError, match='needs --num_processes >= 1 and 0 <= --process_id'):
    runtime.initialize_distributed('127.0.0.1:1', num_processes, process_id)


def test_cpu_description_names_the_model_and_the_vector_flags():
  zen5 = ('processor\t: 0\nmodel name\t: AMD EPYC 9B45\nflags\t\t: fpu sse2 avx2 fma avx512f '
          'avx512_bf16 avx512bw\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9B45\nflags\t\t: avx2\n')
  info = runtime.cpu_info(zen5)
  assert info['model'] == 'AMD EPYC 9B45'
  assert info['flags'] == ['avx2', 'fma', 'avx512f', 'avx512_bf16']   # first CPU, CPU_FLAGS order
  assert runtime.cpu_description(zen5).startswith('AMD EPYC 9B45 x')
  assert runtime.cpu_description('model name\t: Old\nflags\t\t: sse2\n').endswith('(no AVX2)')
