"""Host pipeline: multi-crop shapes, per-process slicing of global batches, iterator state
round-trip, determinism across worker counts (with a corrupt file inside), any iterable of numpy
batches as a training source, and end-to-end runs on an image folder and on an iterable."""
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from configs import simclr
from ssl_jax.data import folder, pipeline, sources
from tests import helpers
from ssl_jax.train import loop, sharding

SPECS = (pipeline.CropSpec('global0', 24, (0.4, 1.0)), pipeline.CropSpec('global1', 24, (0.4, 1.0)),
         *(pipeline.CropSpec(f'local{i}', 12, (0.05, 0.4)) for i in range(4)))


@pytest.fixture(scope='module')
def image_root(tmp_path_factory):
  """train/{a,b}/ JPEGs and PNGs of varying sizes with one corrupt file; val/{a,b}/."""
  root = str(tmp_path_factory.mktemp('folder'))
  rng = np.random.default_rng(1)
  for split, n in (('train', 12), ('val', 6)):
    for c, cls in enumerate(('a', 'b')):
      os.makedirs(os.path.join(root, split, cls))
      for i in range(n):
        h, w = (int(v) for v in rng.integers(24, 64, size=2))
        base = np.full((h, w, 3), 60 + 120 * c, np.uint8)  # class-dependent brightness
        img = np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        ext = 'jpg' if i % 2 else 'png'
        Image.fromarray(img).save(os.path.join(root, split, cls, f'{i:02d}.{ext}'))
  with open(os.path.join(root, 'train', 'a', '05b.jpg'), 'wb') as f:
    f.write(b'\xff\xd8\xff corrupt')
  return root


def _equal_batches(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


def _close(it):
  if hasattr(it, 'close'):
    it.close()


def test_multicrop_shapes_on_images_of_varying_size(image_root):
  src = sources.RobustSource(folder.FolderSource(image_root), probe=0, max_bad_fraction=0.5)
  ds = pipeline.train_dataset(src, SPECS, global_batch=8, seed=0)
  b = ds[0]
  assert b['global0'].shape == b['global1'].shape == (8, 24, 24, 3)
  assert all(b[f'local{i}'].shape == (8, 12, 12, 3) for i in range(4))
  assert all(b[s.name].dtype == np.uint8 for s in SPECS)
  assert b['label'].shape == (8,) and b['index'].shape == (8,)
  assert not np.array_equal(b['global0'], b['global1'])  # independent random crops
  # Labels follow the images: class b is brighter.
  mean = b['global0'].reshape(8, -1).mean(1)
  assert np.all((mean > 120) == (b['label'] == 1))


def test_processes_slice_the_same_global_batches():
  src = sources.builtin_source('digits', 'train')
  specs = (pipeline.CropSpec('view0', 8),)
  one = pipeline.train_dataset(src, specs, global_batch=12, seed=3)
  parts = [pipeline.train_dataset(src, specs, global_batch=12, seed=3, process_index=p,
                                  process_count=3) for p in range(3)]
  for step in (0, 1, 150):  # 150 is past the first epoch (1438 / 12 ~ 120 steps)
    glued = {k: np.concatenate([p[step][k] for p in parts]) for k in one[step]}
    _equal_batches([one[step]], [glued])
  assert len(set(one[0]['index'].tolist() + one[1]['index'].tolist())) == 24
  with pytest.raises(ValueError, match='not divisible by the number of processes'):
    pipeline.train_dataset(src, specs, global_batch=10, seed=0, process_count=3)


def test_iterator_state_round_trip():
  src = sources.builtin_source('digits', 'train')
  ds = pipeline.train_dataset(src, (pipeline.CropSpec('view0', 8),), global_batch=16, seed=0)
  it = pipeline.make_iterator(ds)
  for _ in range(3):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # what the checkpoint stores
  expected = [next(it) for _ in range(4)]
  resumed = pipeline.make_iterator(ds)
  resumed.set_state(state)
  _equal_batches([next(resumed) for _ in range(4)], expected)
  _equal_batches(expected, [ds[i] for i in range(3, 7)])
  _close(it)
  _close(resumed)


def test_same_batches_with_0_and_2_workers_and_a_corrupt_file(image_root):
  # probe=0: the corrupt file is met inside the workers and replaced there.
  src = sources.RobustSource(folder.FolderSource(image_root), probe=0, max_bad_fraction=0.5)
  ds = pipeline.train_dataset(src, SPECS[:2], global_batch=6, seed=5)
  it0 = pipeline.make_iterator(ds, num_workers=0)
  it2 = pipeline.make_iterator(ds, num_workers=2)
  b0 = [next(it0) for _ in range(9)]  # 54 images: more than an epoch of 25 files
  b2 = [next(it2) for _ in range(9)]
  _equal_batches(b0, b2)
  bad = src.source.paths.index(os.path.join(image_root, 'train', 'a', '05b.jpg'))
  seen = np.concatenate([b['index'] for b in b0])
  assert bad not in seen and bad + 1 in seen and len(seen) == 54
  # Resume in a worker-backed iterator from a state taken without workers.
  state = it0.get_state()
  after0 = [next(it0) for _ in range(2)]
  it2b = pipeline.make_iterator(ds, num_workers=2)
  it2b.set_state(state)
  _equal_batches([next(it2b) for _ in range(2)], after0)
  for it in (it0, it2, it2b):
    _close(it)


# -- any iterable of numpy batches ---------------------------------------------------------------

def _image_batches(n_batches, batch=4, size=20, seed=0, log=None):
  rng = np.random.default_rng(seed)
  for k in range(n_batches):
    if log is not None:
      log.append(k)
    yield {'image': rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
           'label': np.arange(batch) + 10 * k}


class ReIterable:
  """A re-iterable dataset object (like a tf.data Dataset) that counts how it is read."""

  def __init__(self, n, **kw):
    self.n, self.kw, self.log = n, kw, []

  def __iter__(self):
    return _image_batches(self.n, log=self.log, **self.kw)


def test_iterable_input_forms_and_errors():
  specs = SPECS[:1] + SPECS[2:3]
  inp = pipeline.IterableInput(_image_batches(3), specs, local_batch=4, seed=0)
  b = next(inp)
  assert b['global0'].shape == (4, 24, 24, 3) and b['local0'].shape == (4, 12, 12, 3)
  np.testing.assert_array_equal(b['label'], [0, 1, 2, 3])
  np.testing.assert_array_equal(b['index'], [-1] * 4)
  # Same (seed, batch number) -> same crops.
  again = next(pipeline.IterableInput(_image_batches(3), specs, local_batch=4, seed=0))
  _equal_batches([b], [again])
  # (image, label) tuples of grey float images in [0, 1] (as_supervised pipelines).
  grey = np.linspace(0, 1, 4 * 20 * 20).reshape(4, 20, 20, 1).astype(np.float32)
  t = next(pipeline.IterableInput([(grey, np.arange(4))], specs, local_batch=4))
  assert t['global0'].shape == (4, 24, 24, 3)
  np.testing.assert_array_equal(t['global0'][..., 0], t['global0'][..., 1])
  # Pre-cropped views pass through untouched.
  views = {'global0': np.ones((4, 24, 24, 3), np.uint8), 'local0': np.zeros((4, 12, 12, 3), np.uint8),
           'index': np.arange(4)}
  p = next(pipeline.IterableInput([views], specs, local_batch=4))
  np.testing.assert_array_equal(p['global0'], views['global0'])
  np.testing.assert_array_equal(p['index'], np.arange(4))
  with pytest.raises(ValueError, match='batch of 4; expected 8'):
    next(pipeline.IterableInput(_image_batches(1), specs, local_batch=8))
  with pytest.raises(KeyError, match="needs 'image'"):
    next(pipeline.IterableInput([{'pixels': grey}], specs, local_batch=4))
  one_shot = pipeline.IterableInput(_image_batches(1), specs, local_batch=4)
  next(one_shot)
  with pytest.raises(RuntimeError, match='ran out after 1 batches'):
    next(one_shot)


def test_iterable_input_state_and_re_iteration():
  specs = SPECS[:1]
  data = ReIterable(3)
  inp = pipeline.IterableInput(data, specs, local_batch=4, seed=1)
  first = [next(inp) for _ in range(5)]  # runs out after 3 and starts the iterable again
  assert data.log == [0, 1, 2, 0, 1]
  np.testing.assert_array_equal(first[3]['label'], first[0]['label'])
  assert inp.get_state() == {'batches': 5}
  # Resume in a "new process": a fresh object skips what was consumed.
  resumed = pipeline.IterableInput(ReIterable(3), specs, local_batch=4, seed=1)
  resumed.peek()  # the trainer peeks for shapes before restoring
  resumed.set_state({'batches': 2})
  b = next(resumed)
  np.testing.assert_array_equal(b['label'], first[2]['label'])
  _equal_batches([b], [first[2]])


# -- end to end through loop.train_and_evaluate ----------------------------------------------------

def _tiny_config(**data):
  c = helpers.tiny(simclr.get_config('builtin'), image_size=16, batch_size=8, steps=2)
  c.data.update(data)
  return c


def test_eval_batches_of_a_folder_have_static_shapes(image_root):
  src = sources.get_source(_tiny_config(source='folder', path=image_root).data, 'val')
  batches = list(pipeline.eval_batches(src, 16, batch_size=5))
  assert [b[0].shape for b in batches] == [(5, 16, 16, 3)] * 3  # 12 images: 5 + 5 + 2 padded
  np.testing.assert_array_equal(np.concatenate([b[2] for b in batches]), [True] * 12 + [False] * 3)
  np.testing.assert_array_equal(np.concatenate([b[1] for b in batches])[:12], [0] * 6 + [1] * 6)


def test_experiment_on_an_image_folder(image_root, tmp_path):
  """The folder source through loop.Experiment up to the first global batch (the compiled step is
  the same as for the built-in set, which the engine tests run; compiling it here would take
  minutes on the shared CPU)."""
  c = _tiny_config(source='folder', path=image_root, eval_split='val', max_bad_fraction=0.2)
  c.train.final_eval = True
  exp = loop.Experiment(c, str(tmp_path / 'run'), mesh=helpers.mesh(1))
  assert len(exp.train_source) == 25 and exp.train_source.num_classes == 2
  it = exp.train_iterator()
  batch = sharding.global_batch(exp.mesh, next(it))
  assert batch['view0'].shape == (8, 16, 16, 3) and batch['view0'].dtype == np.uint8
  assert it.get_state() == {'batches': 1}
  params = jax.eval_shape(lambda s: s.params, exp.abstract_state)
  assert jax.tree_util.tree_leaves(params)
  # With evaluation on, a missing evaluation split stops before training, naming the field.
  c.data.eval_split = 'holdout'
  with pytest.raises(FileNotFoundError, match="config.data.eval_split='holdout'"):
    loop.Experiment(c, str(tmp_path / 'run2'), mesh=helpers.mesh(1))
  c.data.eval_split = 'val'
  c.data.image_size = 160  # 160 px crops of ~24-64 px images
  with pytest.raises(ValueError, match='config.data.image_size=160 is'):
    loop.Experiment(c, str(tmp_path / 'run3'), mesh=helpers.mesh(1))


def test_experiment_takes_an_iterable(tmp_path):
  """The loop's plumbing for ``train_data`` (no step is compiled here: the resume logic is tested
  on IterableInput above, the train steps by the folder run)."""
  c = _tiny_config(image_size=16)
  data = ReIterable(100, batch=8, size=20)
  exp = loop.Experiment(c, str(tmp_path / 'run'), mesh=helpers.mesh(1), train_data=data)
  assert exp.train_ds is None and exp.train_iterator() is exp.train_input
  shapes = jax.tree_util.tree_map(lambda x: x.shape, exp.abstract_state.params)
  assert jax.tree_util.tree_leaves(shapes)  # initialised from the iterable's first batch
  assert data.log == [0]
  first = next(exp.train_iterator())
  assert first['view0'].shape == (8, 16, 16, 3) and data.log == [0]  # the peeked batch is batch 0
  np.testing.assert_array_equal(first['label'], np.arange(8))
  with pytest.raises(ValueError, match='batch of 8; expected 16'):
    c.data.batch_size = 16
    loop.Experiment(c, str(tmp_path / 'run2'), mesh=helpers.mesh(1), train_data=ReIterable(2, batch=8))


# -- full runs (compile the step; minutes on a shared 2-core CPU): SSL_JAX_SLOW_TESTS=1 ------------

slow = pytest.mark.slow


@slow
def test_pretrain_on_an_image_folder_end_to_end(image_root, tmp_path):
  c = _tiny_config(source='folder', path=image_root, eval_split='val', max_bad_fraction=0.2)
  c.train.final_eval = True
  c.eval.batch_size = 8
  summary = loop.train_and_evaluate(c, str(tmp_path / 'run'), mesh=helpers.mesh(1))
  assert summary['steps_run'] == 2 and np.isfinite(summary['final_loss'])
  # The classes differ in brightness: even a 2-step encoder separates them.
  assert summary['knn_top1'] >= 0.75


@slow
def test_pretrain_from_an_iterable_and_resume(tmp_path):
  c = _tiny_config(image_size=16)
  c.train.checkpoint_every = 2
  workdir = str(tmp_path / 'run')
  first = ReIterable(100, batch=8, size=20)
  s1 = loop.train_and_evaluate(c, workdir, mesh=helpers.mesh(1), train_data=first)
  assert s1['steps_run'] == 2 and np.isfinite(s1['final_loss'])
  assert first.log == [0, 1]
  c.train.steps = 3
  c.train.allow_config_change = True   # a longer run has another schedule (train/workdir.py)
  second = ReIterable(100, batch=8, size=20)
  s2 = loop.train_and_evaluate(c, workdir, mesh=helpers.mesh(1), train_data=second)
  assert s2['resumed_from_step'] == 2 and s2['steps_run'] == 1
  assert second.log == [0, 1, 2]  # batches 0 and 1 skipped, batch 2 trained on
