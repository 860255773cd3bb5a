"""``--mode=eval``: the standard frozen-encoder protocols on the latest checkpoint of a run.

    python -m ssl_jax.main --config=configs/simclr.py:builtin --workdir=DIR --mode=eval

1. features of ``data.eval_train_split`` and ``data.eval_split`` (centre crops, eval mode),
   extracted once, jitted and sharded over the mesh;
2. weighted cosine kNN (DINO) at every k in ``eval.knn_ks`` (T = ``eval.knn_temperature``);
3. linear probe (``eval.linear``; eval/linear.py), optionally the augmented MoCo/DINO variant
   (``eval.linear_augment_steps``);
4. fine-tuning (``eval.finetune_steps > 0``; eval/finetune.py);
5. a t-SNE / UMAP PNG of the test embeddings coloured by label (``eval.plot``).

Results go to ``DIR/eval.json`` and TensorBoard (``DIR/tensorboard``, tags ``eval/*`` at the
checkpoint's step). Accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import time

import jax
from absl import logging

from ssl_jax import paths
from ssl_jax.data import sources
from ssl_jax.eval import embedding_plot, features as features_lib, finetune as finetune_lib
from ssl_jax.eval import knn, linear


def evaluate(config, workdir: str, mesh=None, *, require_checkpoint: bool = False) -> dict:
  """Runs the protocols above on the latest checkpoint in ``workdir`` (a fresh, random-init state
  when there is none, unless ``require_checkpoint``); returns and writes the results."""
  from ssl_jax.train import loop  # pylint: disable=g-import-not-at-top
  c = config
  exp = loop.Experiment(config, workdir, mesh)
  state, _ = exp.restore_or_init()
  latest = exp.checkpointer.latest_step()
  exp.checkpointer.close()
  if latest is None and require_checkpoint:
    raise ValueError(f'--workdir={workdir} has no checkpoint to evaluate')
  step = int(jax.device_get(state.step))
  result = {'step': step, 'checkpoint': latest is not None, 'method': c.method.name,
            'backbone': c.model.backbone, 'dataset': c.data.name}

  t0 = time.perf_counter()
  kw = dict(mesh=exp.mesh, image_size=c.data.image_size, batch_size=c.eval.batch_size,
            crop_frac=c.data.eval_crop_frac)
  train_src = sources.get_source(c.data, c.data.eval_train_split)
  test_src = sources.get_source(c.data, c.data.eval_split)
  f_tr, y_tr = features_lib.extract_features(exp.feature_fn, state.params, state.buffers,
                                             train_src, **kw)
  f_te, y_te = features_lib.extract_features(exp.feature_fn, state.params, state.buffers,
                                             test_src, **kw)
  result['feature_dim'] = int(f_tr.shape[1])
  result['num_train'], result['num_test'] = int(len(y_tr)), int(len(y_te))

  nc = train_src.num_classes
  ks = sorted(set(tuple(c.eval.get('knn_ks', ())) + (c.eval.knn_k,)))
  for k in ks:
    result[f'knn_top1_k{k}'] = knn.knn_top1(f_tr, y_tr, f_te, y_te, k=k,
                                            temperature=c.eval.knn_temperature, num_classes=nc)
  result['knn_top1'] = result[f'knn_top1_k{c.eval.knn_k}']   # the run's headline k
  result['knn_k'], result['knn_temperature'] = c.eval.knn_k, c.eval.knn_temperature

  if c.eval.get('linear', True):
    cfg = linear.ProbeConfig.from_config(c.eval)
    probe = linear.linear_probe(f_tr, y_tr, f_te, y_te, nc, cfg)
    result.update({f'linear_{k}': v for k, v in probe.items()})
    result['linear_protocol'] = {'epochs': cfg.epochs, 'optimizer': cfg.optimizer, 'lr': cfg.lr,
                                 'batch_size': cfg.batch_size, 'normalize': cfg.normalize}
    if c.eval.get('linear_augment_steps', 0):
      aug = linear.augmented_linear_probe(
          exp.feature_fn, state.params, state.buffers, train_src, f_te, y_te, mesh=exp.mesh,
          image_size=c.data.image_size, cfg=cfg, clean_train_feats=f_tr,
          crop_scale=tuple(c.data.crop_scale), flip=c.data.flip,
          steps=c.eval.linear_augment_steps)
      result.update({f'linear_aug_{k}': v for k, v in aug.items()})

  if c.eval.get('finetune_steps', 0):
    result.update(finetune_lib.finetune(exp.method, state.params, state.buffers, c, exp.mesh,
                                        train_src, test_src))

  is_main = jax.process_index() == 0
  if c.eval.get('plot', '') and is_main:
    path = str(paths.as_path(exp.workdir) / f'embedding_{c.eval.plot}.png')
    try:
      result['plot'] = embedding_plot.save_embedding_plot(
          f_te, y_te, path, method=c.eval.plot,
          title=f'{c.method.name} {c.model.backbone} step {step}: {c.data.name} test')
    except ImportError as e:   # matplotlib / scikit-learn missing: the numbers still count
      logging.warning('embedding plot skipped: %s', e)
  result['eval_seconds'] = time.perf_counter() - t0

  if is_main:
    paths.write_json_atomic(paths.as_path(exp.workdir) / 'eval.json', result)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    # tensorboardX writes gs:// itself (google-cloud-storage) and local paths.
    with SummaryWriter(str(paths.as_path(exp.workdir) / 'tensorboard')) as writer:
      for key, value in result.items():
        if isinstance(value, float) and key != 'eval_seconds':
          writer.add_scalar(f'eval/{key}', value, step)
  return result
