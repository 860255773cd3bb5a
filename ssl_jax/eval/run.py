"""``--mode=eval``: the standard frozen-encoder protocols on the latest checkpoint of a run.

    python -m ssl_jax.main --config=configs/simclr.py:builtin --workdir=DIR --mode=eval

1. features of ``data.eval_train_split`` and ``data.eval_split`` (centre crops, eval mode),
   extracted once, jitted and sharded over the mesh;
2. weighted cosine kNN (DINO) at every k in ``eval.knn_ks`` (T = ``eval.knn_temperature``);
3. linear probe (``eval.linear``; eval/linear.py), optionally the augmented MoCo/DINO variant
   (``eval.linear_augment_steps``);
4. fine-tuning (``eval.finetune_steps > 0``; eval/finetune.py);
5. a t-SNE / UMAP PNG of the test embeddings coloured by label (``eval.plot``).

The run's config is read from ``DIR/config.json``, so training overrides need not be repeated;
``--config.*`` overrides of eval-side fields (``eval.*``, ``export.*``, ``mesh.*``, the
evaluation splits: the 'harmless' fields of FIELD_RULES in ``train/workdir.py``) apply, others
are ignored with a warning.
A workdir without a checkpoint is an error; checkpoints are opened read-only.

Results go to ``DIR/eval.json`` and TensorBoard (``DIR/tensorboard``, tags ``eval/*`` at the
checkpoint's step). Accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import math
import time

import jax
import numpy as np
from absl import logging

from ssl_jax import paths
from ssl_jax.eval import embedding_plot, finetune as finetune_lib
from ssl_jax.eval import knn, linear
from ssl_jax.eval import speech as speech_eval
from ssl_jax.train import experiment as experiment_lib


class NonFiniteMetricError(ValueError):
  """An evaluation produced NaN/Inf: a broken encoder or probe, not a number for a table."""


def check_finite(result: dict, where: str) -> dict:
  """``result`` unchanged if every number in it is finite; else NonFiniteMetricError naming them."""
  bad = [k for k, v in result.items()
         if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v)]
  if bad:
    raise NonFiniteMetricError(
        f'evaluation of {where} gave non-finite {", ".join(f"{k}={result[k]}" for k in bad)}; '
        'nothing was written. Check the checkpoint (train.nan_policy, skipped_updates in '
        'summary.json) and the eval.* settings of that protocol (e.g. eval.linear_lr).')
  return result


def evaluate(config, workdir: str, mesh=None, *, require_checkpoint: bool = True,
             overrides=None) -> dict:
  """Runs the protocols above on the latest checkpoint in ``workdir``; returns and writes the
  results. The run's config comes from ``WORKDIR/config.json`` with ``config``'s eval-side
  fields (those named in ``overrides``, or all when it is None: workdir.reader_config);
  checkpoints are opened read-only, so
  a live trainer in the same workdir is undisturbed. A workdir without a checkpoint is an error
  (``require_checkpoint`` is kept for callers; there is no random-init evaluation any more)."""
  del require_checkpoint
  exp = experiment_lib.Experiment.for_reading(config, workdir, mesh, overrides)
  c = exp.config
  state = exp.restore_for_reading()
  step = int(jax.device_get(state.step))
  result = {'step': step, 'checkpoint': True, 'method': c.method.name,
            'backbone': c.model.backbone, 'dataset': c.data.name}

  t0 = time.perf_counter()
  ks = sorted(set(tuple(c.eval.get('knn_ks', ())) + (c.eval.knn_k,)))
  scores, feats = knn.knn_eval(exp.feature_fn, state.params, state.buffers, c, exp.mesh, ks)
  f_tr, y_tr, f_te, y_te, nc, train_src, test_src = feats
  for split, f in ((c.data.eval_train_split, f_tr), (c.data.eval_split, f_te)):
    if not np.all(np.isfinite(f)):  # kNN would still print an accuracy for NaN features
      raise NonFiniteMetricError(
          f'the encoder of {exp.workdir} at step {step} gives non-finite features on '
          f'{split!r}: kNN, linear probe and fine-tuning would be meaningless. Check the '
          'checkpoint (train.nan_policy, skipped_updates in summary.json).')
  result['feature_dim'] = int(f_tr.shape[1])
  result['num_train'], result['num_test'] = int(len(y_tr)), int(len(y_te))
  for k in ks:
    result[f'knn_top1_k{k}'] = scores[k]
  result['knn_top1'] = result[f'knn_top1_k{c.eval.knn_k}']   # the run's headline k
  result['knn_k'], result['knn_temperature'] = c.eval.knn_k, c.eval.knn_temperature

  if c.data.get('modality', 'image') == 'audio' and c.eval.get('speech_eval', True):
    result.update(speech_eval.evaluate(exp.method, state.params, c))   # phone probe, PNMI

  if c.eval.get('linear', True):
    cfg = linear.ProbeConfig.from_config(c.eval)
    probe = linear.linear_probe(f_tr, y_tr, f_te, y_te, nc, cfg)
    result.update({f'linear_{k}': v for k, v in probe.items()})
    result['linear_protocol'] = {'epochs': cfg.epochs, 'optimizer': cfg.optimizer, 'lr': cfg.lr,
                                 'batch_size': cfg.batch_size, 'normalize': cfg.normalize}
    if c.eval.get('linear_augment_steps', 0) and exp.method.modality == 'image':
      aug = linear.augmented_linear_probe(
          exp.feature_fn, state.params, state.buffers, train_src, f_te, y_te, mesh=exp.mesh,
          image_size=c.data.image_size, cfg=cfg, clean_train_feats=f_tr,
          crop_scale=tuple(c.data.crop_scale), flip=c.data.flip,
          steps=c.eval.linear_augment_steps)
      result.update({f'linear_aug_{k}': v for k, v in aug.items()})

  if c.eval.get('finetune_steps', 0) and exp.method.modality != 'image':
    result['finetune_skipped'] = (f'fine-tuning reads images; {c.method.name} trains a '
                                  f'{exp.method.modality} encoder')
  elif c.eval.get('finetune_steps', 0) and not exp.method.has_encoder:
    result['finetune_skipped'] = f'{c.method.name} trains no image encoder'
  elif c.eval.get('finetune_steps', 0):
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
  check_finite(result, f'{exp.workdir} at step {step}')

  if is_main:
    paths.write_json_atomic(paths.as_path(exp.workdir) / 'eval.json', result)
    from ssl_jax.train import summaries  # pylint: disable=g-import-not-at-top
    with summaries.Summaries(exp.workdir, c) as writer:   # TensorBoard [+ W&B]
      for key, value in result.items():
        if isinstance(value, float) and key != 'eval_seconds':
          writer.add_scalar(f'eval/{key}', value, step)
  return result
