"""Shared test utilities: tiny configs, meshes, and running a few real train steps."""
from __future__ import annotations

import tempfile

import jax
import numpy as np
from ml_collections import ConfigDict

from ssl_jax.train import loop, sharding


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a test subprocess: ``devices`` simulated CPU devices, fast compiles."""
  from tests.conftest import FAST_COMPILE  # pylint: disable=g-import-not-at-top
  return f'--xla_force_host_platform_device_count={devices} {FAST_COMPILE}'


def tiny(config: ConfigDict, *, image_size: int = 16, batch_size: int = 16, steps: int = 4):
  """Shrinks any method config to a seconds-to-compile model on the built-in set."""
  c = config
  c.data.source = 'builtin'
  c.data.name = 'mnist5k'
  c.data.image_size = image_size
  c.data.batch_size = batch_size
  c.data.num_workers = 0
  c.model.width = 4
  c.model.stage_sizes = (1, 1, 1, 1)   # one block per ResNet stage: half the compile time
  c.model.cifar_stem = True
  # XLA's own convolutions: the train step compiles ~1.7x faster than with the im2col / Winograd
  # matmul forms 'auto' picks on CPU, which tests/models (test_resnet, cpu/) check against XLA's.
  c.model.conv_impl = 'xla'
  c.model.patch_size = 4
  c.model.img_size = image_size
  c.model.embed_dim = 32
  c.model.depth = 2
  c.model.num_heads = 2
  return short_run(c, steps, eval_batch_size=64)


def tiny_audio(c: ConfigDict, batch_size: int = 8, steps: int = 3) -> ConfigDict:
  """A seconds-to-compile audio encoder on a 5-voice spoken_digits set (cached once)."""
  c.data.name = 'spoken_digits'
  c.data.speech_speakers = (3, 2)
  c.data.clip_samples = 8000           # 0.5 s: 24 frames
  c.data.batch_size = batch_size
  c.data.num_workers = 0
  c.model.backbone = 'audio_tiny'
  c.model.conv_dim = 16
  c.model.embed_dim = 32
  c.model.depth = 2
  c.model.num_heads = 2
  c.model.pos_conv_kernel = 8
  c.model.pos_conv_groups = 4
  return short_run(c, steps, eval_batch_size=16)


def short_run(c: ConfigDict, steps: int, eval_batch_size: int) -> ConfigDict:
  """``steps`` steps logged every step, one checkpoint at the end, no final kNN, no progress bar."""
  c.train.steps = steps
  c.train.log_every = 1
  c.train.checkpoint_every = steps
  c.train.progress_bar = False
  c.train.final_eval = False
  c.optim.warmup_steps = 1
  c.eval.batch_size = eval_batch_size
  return c


# ``tiny``'s model and data shrink as ``python -m ssl_jax.main`` flags, for the tests that start
# training subprocesses (resume, multi-host, gs://); each adds its own steps and checkpoints.
TINY_CLI = [
    '--config.model.width=4', '--config.model.stage_sizes=(1,1,1,1)',
    '--config.model.conv_impl=xla', '--config.data.image_size=16', '--config.data.batch_size=16',
    '--config.method.proj_hidden_dim=16', '--config.method.proj_dim=8',
    '--config.train.final_eval=False', '--config.train.progress_bar=False',
]


def tiny_swin(c: ConfigDict, embed_dim: int, depths, heads) -> ConfigDict:
  """Switches a (tiny) config to a Swin with 2 px patches and 4x4 windows of these stage sizes."""
  c.model.backbone, c.model.patch_size, c.model.window_size = 'swin_tiny', 2, 4
  c.model.embed_dim, c.model.swin_depths, c.model.swin_heads = embed_dim, depths, heads
  # The ViT-only model fields back to their defaults (a Swin averages its last stage).
  c.model.update(dict(pool='token', pool_token=0, pos_embed='learned', num_prefix_tokens=1,
                      frozen_patch_embed=False))
  return c


def mesh(n_devices: int):
  """A 1-D data mesh over the first ``n_devices`` devices."""
  return sharding.make_mesh(ConfigDict({'shape': (-1,), 'axes': ('data',)}),
                            devices=jax.devices()[:n_devices])


def run_steps(config, n_devices: int, steps: int, workdir: str | None = None):
  """Runs ``steps`` real train steps on ``n_devices``; returns (state, [metrics per step])."""
  exp = loop.Experiment(config, workdir or tempfile.mkdtemp(), mesh(n_devices))
  state = exp.initial_state()
  history = []
  for i in range(steps):
    batch = sharding.global_batch(exp.mesh, exp.train_ds[i])
    state, metrics = exp.step_fn(state, batch)
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return state, history


def assert_trees_close(a, b, rtol=1e-4, atol=1e-5):
  """Leaf-wise allclose of two pytrees (with the path of the first mismatch in the message)."""
  la = jax.tree_util.tree_flatten_with_path(jax.device_get(a))[0]
  lb = jax.tree_util.tree_leaves(jax.device_get(b))
  assert len(la) == len(lb)
  for (path, x), y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol,
                               err_msg=jax.tree_util.keystr(path))
