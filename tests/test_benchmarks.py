"""The benchmarks' helpers: quality.py's --set parsing and DINO/iBOT collapse check;
throughput.py's MFU rows, peak table and MFU column; block_knn.py's per-block readouts."""
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


# --------------------------------------------------------------------------- block_knn.py

_BLOCK_KNN = os.path.join(os.path.dirname(_PATH), 'block_knn.py')


@pytest.fixture(scope='module')
def block_knn():
  return _load('_block_knn_benchmark', _BLOCK_KNN)


def _tiny_method_config(quality, name):
  """configs/<name>.py:builtin shrunk by helpers.tiny: 16 px, patch 4 (4x4 patches), D=32, depth 2."""
  from tests import helpers  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(_PATH))
  return helpers.tiny(quality.load_config(os.path.join(root, 'configs', f'{name}.py:builtin')))


def test_block_readouts_last_block_is_the_eval_feature_and_masks_are_the_methods(block_knn,
                                                                              quality):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ssl_jax.methods import build_method  # pylint: disable=g-import-not-at-top
  c = _tiny_method_config(quality, 'simmim')
  c.method.mask_patch_size = 8                    # 2x2 mask grid of 2x2 patches, 3 hidden
  method = build_method(c)
  batch = {'view0': np.zeros((2, 16, 16, 3), np.uint8)}
  params, _ = method.init(jax.random.PRNGKey(0), batch)
  images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
  out = block_knn.readouts(method, params, images)
  assert set(out) == {'b0_mean', 'b0_mean_norm', 'b0_cls', 'b1_mean', 'b1_mean_norm', 'b1_cls',
                      'mask_tokens', 'visible_tokens'}
  assert all(v.shape == (3, 32) for v in out.values())
  np.testing.assert_allclose(out['b1_mean_norm'], method.features(params, {}, images),
                             rtol=1e-5, atol=1e-6)
  assert not np.allclose(out['b1_mean'], out['b1_mean_norm'])
  mask = np.asarray(block_knn.readout_mask(method, 3, 16, jax.random.PRNGKey(0)))
  assert mask.shape == (3, 16) and (mask.sum(1) == 12).all()     # ceil(0.6 * 4) = 3 blocks of 4
  # The masked input's tokens: hidden and visible positions read out differently.
  assert not np.allclose(out['mask_tokens'], out['visible_tokens'])


def test_block_readouts_refuse_a_convnet(block_knn, quality):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ssl_jax.methods import build_method  # pylint: disable=g-import-not-at-top
  method = build_method(_tiny_method_config(quality, 'simclr'))
  with pytest.raises(ValueError, match='block_knn reads ViT blocks; SimCLR has backbone ResNet'):
    block_knn.readouts(method, {'backbone': {}}, np.zeros((1, 16, 16, 3), np.uint8))


def test_block_knn_extract_keeps_names_with_their_columns(block_knn, quality, tmp_path):
  """extract() concatenates the readouts into one feature array and splits it back by name; each
  name must get its own readout (jax.eval_shape returns the names sorted, not in build order)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  c = _tiny_method_config(quality, 'simmim')
  c.method.mask_patch_size = 8
  c.eval.batch_size = 512
  with pytest.raises(ValueError, match='has no checkpoint of simmim'):
    block_knn.extract(c, str(tmp_path), require_checkpoint=True)
  tr, y_tr, te, y_te, step = block_knn.extract(c, str(tmp_path), require_checkpoint=False)
  assert step == 0 and len(y_tr) == 4000 and len(y_te) == 1000
  from ssl_jax.train import loop  # pylint: disable=g-import-not-at-top
  exp = loop.Experiment(c, str(tmp_path))
  state, _ = exp.restore_or_init()
  exp.checkpointer.close()
  src = sources.get_source(c.data, c.data.eval_split)
  from ssl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  images, _, valid = next(iter(pipeline.eval_batches(src, 16, 8, c.data.eval_crop_frac, 0, 1)))
  direct = block_knn.readouts(exp.method, state.params, images[valid])
  assert set(tr) == set(direct)
  for name, value in direct.items():
    np.testing.assert_allclose(te[name][:len(value)], value, rtol=1e-4, atol=1e-5, err_msg=name)
  acc = block_knn.score_all({'b': tr['b1_mean_norm']}, y_tr, {'b': te['b1_mean_norm']}, y_te,
                            k=20, temperature=0.07, num_classes=10)
  assert set(acc) == {'b', 'b_z'} and all(0.2 < a <= 1.0 for a in acc.values())


def test_accelerator_check_smoke_runs_the_whole_path_on_cpu(tmp_path):
  """benchmarks/accelerator_check.sh --smoke: device, a tiny quickstart run, the JSON format."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / 'check.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(['bash', 'benchmarks/accelerator_check.sh', '--smoke', '--out', str(out)],
                        cwd=root, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result['device']['platform'] == 'cpu'
  q = result['quickstart']
  assert q['ok'] and q['finite'] and q['steps'] == 4 and q['first_loss'] > 0
  assert 'skipped' in result['mfu'] and 'skipped' in result['input'] and result['seconds'] > 0
