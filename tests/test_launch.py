"""Smoke tests of the launch scripts' --dry-run (what CI can check without a cluster)."""
import os
import signal
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CMD = ['python', '-m', 'ssl_jax.main', '--config=configs/simclr.py:imagenet', '--workdir=gs://b/r']


def run(*args):
  return subprocess.run(['bash', *args], cwd=ROOT, capture_output=True, text=True, check=True,
                        timeout=60).stdout.strip().splitlines()


def test_tpu_pod_dry_run_runs_same_command_on_all_workers():
  lines = run('launch/tpu_pod.sh', '--tpu=pod1', '--zone=us-central2-b', '--project=p', '--dry-run',
              '--', *CMD)
  assert len(lines) == 3
  assert lines[0].startswith('tar ')
  assert 'tpu-vm scp' in lines[1] and '--worker=all' in lines[1]
  assert 'tpu-vm ssh pod1' in lines[2] and '--worker=all' in lines[2] and '--project=p' in lines[2]
  assert 'ssl_jax.main' in lines[2] and 'requirements.txt' in lines[2]


def test_tpu_pod_requires_name_and_zone():
  p = subprocess.run(['bash', 'launch/tpu_pod.sh', '--dry-run', '--', *CMD], cwd=ROOT,
                     capture_output=True, text=True)
  assert p.returncode == 2 and '--tpu and --zone are required' in p.stderr


def test_local_dry_run_gives_each_process_its_id():
  lines = run('launch/local.sh', '--dry-run', '-n', '3', '--port', '23456', '--', *CMD)
  assert len(lines) == 3
  for i, line in enumerate(lines):
    assert f'--process_id={i}' in line and '--num_processes=3' in line
    assert '--coordinator_address=127.0.0.1:23456' in line


def test_slurm_dry_run():
  lines = run('launch/slurm.sbatch', '--dry-run', *CMD)
  assert lines[0].startswith('srun ') and '--gpus-per-task=1' in lines[0]
  assert 'ssl_jax.main' in lines[0]
  assert lines[1] == '# on exit status 143: scontrol requeue $SLURM_JOB_ID'


FAKE_SRUN = """#!/usr/bin/env bash
echo "srun $*" >> "$LOG"
if [[ "$FAKE" == term ]]; then trap 'echo got-TERM >> "$LOG"; exit 143' TERM; sleep 60 & wait; fi
exit "$FAKE_RC"
"""


def _slurm_env(tmp_path, **env):
  """PATH with fake srun/scontrol that log their arguments to tmp_path/log."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  (bin_dir / 'srun').write_text(FAKE_SRUN)
  (bin_dir / 'scontrol').write_text('#!/usr/bin/env bash\necho "scontrol $*" >> "$LOG"\n')
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  return {**os.environ, 'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'LOG': str(tmp_path / 'log'),
          'SLURM_JOB_ID': '4242', 'FAKE_RC': '0', 'FAKE': '', **env}


@pytest.mark.parametrize('rc,requeued', [(0, False), (1, False), (143, True)])
def test_slurm_requeues_after_a_signal_triggered_stop(tmp_path, rc, requeued):
  env = _slurm_env(tmp_path, FAKE_RC=str(rc))
  p = subprocess.run(['bash', 'launch/slurm.sbatch', *CMD], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=60)
  log = (tmp_path / 'log').read_text().splitlines()
  assert p.returncode == rc and log[0].startswith('srun ') and 'ssl_jax.main' in log[0]
  assert ('scontrol requeue 4242' in log) == requeued, log


def test_slurm_passes_the_signal_on_and_requeues(tmp_path):
  # Slurm's --signal=B:TERM signals the batch shell; srun must get it, and its 143 requeues.
  p = subprocess.Popen(['bash', 'launch/slurm.sbatch', *CMD], cwd=ROOT,
                       env=_slurm_env(tmp_path, FAKE='term'), stderr=subprocess.PIPE, text=True)
  log = tmp_path / 'log'
  for _ in range(200):
    if log.exists() and log.read_text().startswith('srun '):
      break
    time.sleep(0.05)
  time.sleep(0.2)
  p.send_signal(signal.SIGTERM)
  assert p.wait(timeout=60) == 143, p.stderr.read()
  assert log.read_text().splitlines()[1:] == ['got-TERM', 'scontrol requeue 4242']


def test_hugepage_env_adds_the_malloc_tunable_once():
  from ssl_jax import runtime  # pylint: disable=g-import-not-at-top
  env = runtime.hugepage_env({'PATH': '/bin'})
  assert env == {'PATH': '/bin', 'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}
  env = runtime.hugepage_env({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'})
  assert env['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'
  assert runtime.hugepage_env({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}) is None  # user's choice
  assert runtime.hugepage_env({'SSL_JAX_HUGEPAGES': '0'}) is None


def test_reexec_keeps_the_command_line_and_sets_the_tunable():
  code = ('import os, sys; from ssl_jax import runtime; runtime.reexec_with_hugepages(); '
          'print(os.environ.get("GLIBC_TUNABLES"), os.getpid(), sys.argv[1:])')
  env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', 'SSL_JAX_HUGEPAGES')}
  out = subprocess.run(['python', '-c', code, 'a', 'b'], cwd=ROOT, env=env, capture_output=True,
                       text=True, check=True, timeout=60).stdout.split()
  assert out[0] == 'glibc.malloc.hugetlb=1' and out[2:] == ["['a',", "'b']"]
  off = subprocess.run(['python', '-c', code], cwd=ROOT, env={**env, 'SSL_JAX_HUGEPAGES': '0'},
                       capture_output=True, text=True, check=True, timeout=60).stdout.split()
  assert off[0] == 'None'


def test_cpu_dots_flag_follows_the_backbone():
  import pytest  # pylint: disable=g-import-not-at-top
  from ssl_jax import config as config_lib, runtime  # pylint: disable=g-import-not-at-top
  c = config_lib.base_config()
  eigen = '--xla_cpu_experimental_ynn_fusion_type='
  c.model.backbone = 'vit_tiny'
  assert runtime.cpu_dots_xla_flags(c, '') == eigen                   # auto: Eigen for a ViT
  assert runtime.cpu_dots_xla_flags(c, '--a=1') == f'--a=1 {eigen}'   # the user's flags kept
  assert runtime.cpu_dots_xla_flags(c, f'--a=1 {eigen}ynn') is None   # theirs wins
  c.model.backbone = 'resnet18'
  assert runtime.cpu_dots_xla_flags(c, '--a=1') is None               # auto: XLA's for a ResNet
  c.model.cpu_dots = 'eigen'
  assert runtime.cpu_dots_xla_flags(c, '') == eigen
  c.model.backbone, c.model.cpu_dots = 'vit_small', 'xla'
  assert runtime.cpu_dots_xla_flags(c, '') is None
  c.model.cpu_dots = 'eign'
  with pytest.raises(ValueError, match=r"model\.cpu_dots='eign'.*did you mean 'eigen'"):
    runtime.cpu_dots_xla_flags(c, '')


def test_cpu_dots_flag_takes_effect_when_set_before_the_first_computation():
  # What runtime.setup does: set XLA_FLAGS in-process after config parsing, then use JAX. The
  # YNNPACK fusions show in the compiled HLO as ynn fusions; with the flag a dot compiles without them.
  code = ('import os, sys, jax, jax.numpy as jnp\n'
          'if sys.argv[1] == "eigen":\n'
          '  os.environ["XLA_FLAGS"] += " --xla_cpu_experimental_ynn_fusion_type="\n'
          'x = jnp.ones((256, 256))\n'
          'print("ynn" in jax.jit(lambda a: a @ a).lower(x).compile().as_text())\n')
  env = dict(os.environ, XLA_FLAGS=os.environ.get('XLA_FLAGS', ''))
  out = {mode: subprocess.run(['python', '-c', code, mode], cwd=ROOT, env=env, capture_output=True,
                              text=True, check=True, timeout=120).stdout.strip()
         for mode in ('xla', 'eigen')}
  assert out == {'xla': 'True', 'eigen': 'False'}
