"""Every command on the README and the docs pages is checked (issue 33).

Each ``python -m ssl_jax.main`` command is parsed as the command line would: the config file and
variant load, every ``--config.FIELD=VALUE`` names a real field and parses to its type, the
config validates and ``--mode`` exists. Benchmarks and launch scripts exist and take the flags the
docs give them. The README's "Evaluate and export" block and its Python snippet run as written,
with tiny-model overrides appended (the documented commands themselves train for minutes).
"""
import ast
import glob
import importlib
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

from ssl_jax import config as config_lib
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ['README.md'] + sorted(os.path.relpath(p, ROOT) for p in
                               glob.glob(os.path.join(ROOT, 'docs', '**', '*.md'), recursive=True))
MODES = ('pretrain', 'eval', 'export', 'memory')


def code_blocks(page: str, lang: str):
  text = open(os.path.join(ROOT, page)).read()
  return re.findall(rf'```{lang}\n(.*?)```', text, flags=re.S)


def commands(page: str):
  """Shell commands of a page's bash blocks, continuation lines joined, comments dropped."""
  out = []
  for block in code_blocks(page, 'bash'):
    joined = re.sub(r'\\\n\s*', ' ', block)
    for line in joined.splitlines():
      line = line.split(' # ')[0].split('  #')[0].strip()
      if line and not line.startswith('#'):
        out.extend(part.strip() for part in line.split(' && '))
  return out


ALL = [(page, cmd) for page in PAGES for cmd in commands(page)]
MAIN = [(p, c) for p, c in ALL if 'ssl_jax.main' in c]


def _main_args(cmd: str) -> list[str]:
  words = shlex.split(cmd)
  return words[words.index('ssl_jax.main') + 1:]


def _flags(args: list[str]) -> dict:
  """``--name=value`` (or ``--name``: 'True') of a command's arguments."""
  return dict(a[2:].split('=', 1) if '=' in a else (a[2:], 'True') for a in args)


def _documented_config(module, variant: str, flags: dict):
  """The config a command's --config (module, variant) and --config.FIELD=VALUE flags give."""
  config = module.get_config(variant) if variant else module.get_config()
  for key, raw in flags.items():
    if key.startswith('config.'):
      _set_field(config, key[len('config.'):], raw)
  return config


def _set_field(config, dotted: str, raw: str):
  """Applies one --config.FIELD=VALUE the way the flag parser does: the field must exist and the
  value must parse to its type."""
  *parents, leaf = dotted.split('.')
  node = config
  for p in parents:
    node = node[p]
  assert leaf in node, f'--config.{dotted}: no such field'
  old = node[leaf]
  if isinstance(old, str):
    value = raw
  elif isinstance(old, bool):
    assert raw in ('True', 'False', 'true', 'false'), f'--config.{dotted}={raw}: not a bool'
    value = raw.lower() == 'true'
  else:
    value = ast.literal_eval(raw)
    if isinstance(old, float) and isinstance(value, int):
      value = float(value)
    assert isinstance(value, type(old)) or old is None, f'--config.{dotted}={raw}: not {type(old)}'
  node[leaf] = value


def test_the_pages_have_commands():
  assert len(MAIN) >= 10 and any(p == 'README.md' for p, _ in MAIN)


@pytest.mark.parametrize('page,cmd', MAIN, ids=[f'{p}:{i}' for i, (p, _) in enumerate(MAIN)])
def test_documented_ssl_jax_command_parses(page, cmd):
  flags = _flags(_main_args(cmd))
  assert flags.get('mode', 'pretrain') in MODES, (page, cmd)
  if 'list' in flags:
    return
  assert 'workdir' in flags, (page, cmd)
  path, _, variant = flags['config'].partition(':')
  assert os.path.exists(os.path.join(ROOT, path)), (page, cmd)
  module = importlib.import_module(path[:-3].replace('/', '.'))
  if variant.startswith('folder,/path/to'):   # the recipe reads the user's folder: checked exists
    assert hasattr(module, 'folder_config'), (page, cmd)
    return
  config = _documented_config(module, variant, flags)
  if config.data.source == 'folder' and config.data.path.startswith('/path/to'):
    return   # a placeholder for the user's folder: the rest of the config was checked above
  config_lib.validate(config)


@pytest.mark.parametrize('page,cmd', [(p, c) for p, c in ALL
                                      if c.startswith(('python benchmarks/', 'bash benchmarks/',
                                                       'launch/', 'sbatch'))])
def test_documented_scripts_exist_and_take_those_flags(page, cmd):
  words = shlex.split(cmd)
  script = next(w for w in words if w.startswith(('benchmarks/', 'launch/')))
  text = open(os.path.join(ROOT, script)).read()
  own = words[words.index(script) + 1:]
  if '--' in own:
    own = own[:own.index('--')]
  if script.endswith('.sbatch'):
    own = []   # sbatch's options come before the script, the command after it
  for word in own:
    if word.startswith('--'):
      flag = word.split('=')[0]
      assert flag in text, f'{page}: {script} has no {flag}'


def _tiny_overrides(workdir):
  return [f'--workdir={workdir}', '--config.data.image_size=16', '--config.model.img_size=16',
          '--config.model.embed_dim=32', '--config.model.depth=1', '--config.model.num_heads=2',
          '--config.data.batch_size=8', '--config.train.steps=2', '--config.train.log_every=1',
          '--config.train.checkpoint_every=2', '--config.train.knn_every=0',
          '--config.train.progress_bar=False', '--config.method.decoder_dim=16',
          '--config.method.decoder_depth=1', '--config.method.decoder_heads=2',
          "--config.data.eval_split=test", "--config.data.eval_train_split=test",
          '--config.eval.knn_ks=(5,)', '--config.eval.knn_k=5', '--config.eval.linear_epochs=1',
          '--config.eval.plot=', '--config.data.num_workers=0',
          '--config.data.speech_speakers=(3,2)', '--config.model.conv_dim=16']


def readme_evaluate_export_block() -> list[str]:
  """The README's pretrain / eval / export command lines, comments dropped."""
  block = next(b for b in code_blocks('README.md', 'bash') if '--mode=export' in b)
  return [l.split('#')[0].strip() for l in block.splitlines() if l.strip()]


def test_readme_evaluate_and_export_run_as_written(tmp_path):
  """The README's pretrain / eval / export block, then its Python snippet on the result."""
  lines = readme_evaluate_export_block()
  assert len(lines) == 3, lines
  workdir = str(tmp_path / 'run')
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, XLA_FLAGS=helpers.xla_flags(1))
  for line in lines:
    words = [w for w in shlex.split(line) if not w.startswith('--workdir=')]
    mode_eval = '--mode=eval' in words or '--mode=export' in words
    extra = _tiny_overrides(workdir)
    if mode_eval:  # a reader takes the run's saved config; the eval/export fields may be given
      extra = [a for a in extra if a.startswith(('--workdir', '--config.eval', '--config.data.eval'))]
    out = subprocess.run([sys.executable] + words[1:] + extra, cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  snippet = next(b for b in code_blocks('README.md', 'python') if 'timm_model' in b)
  snippet = snippet.replace('/tmp/mae_run', workdir)
  # This machine's torchvision wheel is a CUDA build beside CPU torch (tests/export/conftest.py).
  check = 'from tests.export.conftest import _import_timm\n_import_timm()\n' + snippet + ('import numpy as np, torch\n'
                     'x = np.random.RandomState(0).rand(2, 16, 16, 3).astype(np.float32)\n'
                     'ours = np.asarray(module.apply(variables, x, train=False))\n'
                     'theirs = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy()\n'
                     'assert np.abs(ours - theirs).max() < 1e-4, np.abs(ours - theirs).max()\n'
                     'print("snippet ok")\n')
  out = subprocess.run([sys.executable, '-c', check], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0 and 'snippet ok' in out.stdout, out.stderr[-3000:]


LAUNCH = [(p, c) for p, c in ALL if c.startswith(('launch/', 'sbatch'))]


@pytest.mark.parametrize('page,cmd', LAUNCH, ids=[f'{p}:{i}' for i, (p, _) in enumerate(LAUNCH)])
def test_documented_launch_commands_run_dry(page, cmd):
  """Each launch line runs as written with --dry-run, and passes the ssl_jax command through."""
  words = shlex.split(cmd)
  if words[0] == 'sbatch':   # sbatch's own options, then the script and its command
    words = words[next(i for i, w in enumerate(words) if w.startswith('launch/')):]
  script, rest = words[0], words[1:]
  out = subprocess.run(['bash', script, '--dry-run'] + rest, cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, SLURM_JOB_NUM_NODES='4'))
  assert out.returncode == 0, (page, cmd, out.stdout[-1500:], out.stderr[-1500:])
  assert 'ssl_jax.main' in out.stdout, (page, cmd, out.stdout[-1500:])


# Every other documented ssl_jax command, once each in page order (a --mode=eval line after the
# pretrain line of its workdir). Lines under a launcher (TPU pod, Slurm, local processes) run dry
# in test_documented_launch_commands_run_dry; the README's evaluate/export block runs above.
RUNNABLE = []
for _page, _cmd in MAIN:
  if (not _cmd.startswith(('launch/', 'sbatch')) and _cmd not in readme_evaluate_export_block()
      and _cmd not in [c for c, _ in RUNNABLE]):
    RUNNABLE.append((_cmd, _page))
RESNET_TINY = ['--config.model.width=4', '--config.model.stage_sizes=(1,1,1,1)',
               '--config.model.conv_impl=xla']


def _names_a_field(config, override: str) -> bool:
  """Whether ``--config.SECTION.FIELD=VALUE`` names a field of ``config``."""
  section, field = override.split('=', 1)[0][len('--config.'):].split('.', 1)
  return field in config[section]


def _tiny_labelled_folder(root) -> str:
  """ROOT/{train,test}/<2 classes>/*.png: 32-px colour images, 12 and 4 per class."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for split, n in (('train', 12), ('test', 4)):
    for k in range(2):
      d = root / split / f'class{k}'
      d.mkdir(parents=True)
      for i in range(n):
        img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) // (k + 1)
        Image.fromarray(img).save(d / f'{i}.png')
  return str(root)


def test_every_documented_command_runs_with_tiny_settings(tmp_path):
  """Each documented ssl_jax command (RUNNABLE) runs as written, with tiny-model overrides
  appended: the user's folder is a generated one, TFDS datasets are tfds.testing.mock_data."""
  assert {p for _, p in RUNNABLE} >= {'README.md', 'docs/datasets.md', 'docs/own-data.md',
                                      'docs/scaling.md', 'docs/methods/index.md'}
  folder = _tiny_labelled_folder(tmp_path / 'images')
  workdirs = {}
  for cmd, page in RUNNABLE:
    devices = re.match(r'XLA_FLAGS=--xla_force_host_platform_device_count=(\d+) ', cmd)
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT,
               XLA_FLAGS=helpers.xla_flags(int(devices.group(1)) if devices else 1))
    t0 = time.perf_counter()
    args = [a.replace('/path/to/images', folder) for a in _main_args(cmd)]
    flags = _flags(args)
    workdir = workdirs.setdefault(flags['workdir'], str(tmp_path / f'run{len(workdirs)}'))
    args = [a for a in args if not a.startswith('--workdir=')] + [f'--workdir={workdir}']
    path, _, variant = flags['config'].partition(':')
    config = _documented_config(importlib.import_module(path[:-3].replace('/', '.')), variant,
                                flags)
    mode = flags.get('mode', 'pretrain')
    if mode == 'pretrain':
      extra = [a for a in _tiny_overrides(workdir) + RESNET_TINY
               if a.startswith('--config.') and _names_a_field(config, a)]
      if variant.startswith('folder'):   # the recipe sizes the run by epochs and minutes
        extra += ['--config.train.epochs=0', '--config.train.budget_minutes=0']
    elif mode == 'memory':   # compiles the documented step for the documented mesh: tiny model
      extra = [a for a in _tiny_overrides(workdir) if a.startswith('--config.model.')]
    else:
      extra = [a for a in _tiny_overrides(workdir) if a.startswith(('--config.eval',
                                                                    '--config.data.eval'))]
    runner = [sys.executable, os.path.join(ROOT, 'tests', 'run_documented.py')]
    runner += ['--mock_tfds'] if config.data.source == 'tfds' else []
    out = subprocess.run(runner + ['--'] + args + extra, cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, (page, cmd, out.stdout[-2000:], out.stderr[-3000:])
    print(f'{time.perf_counter() - t0:5.1f} s  {page}: {cmd}')
