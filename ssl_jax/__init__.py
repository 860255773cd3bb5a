"""ssl_jax: self-supervised representation learning in JAX / Flax.

The Python API (the command line ``python -m ssl_jax.main --mode=pretrain|eval|export`` calls the
same functions)::

    import ssl_jax
    from configs import simclr

    config = simclr.get_config('builtin')
    summary = ssl_jax.pretrain(config, '/tmp/run')     # train (resumes from the workdir's checkpoint)
    results = ssl_jax.evaluate(config, '/tmp/run')     # kNN, linear probe, [fine-tune] -> eval.json
    ssl_jax.export.export(config, '/tmp/run')          # /tmp/run/export/{encoder,timm}
    model, variables = ssl_jax.export.load_encoder('/tmp/run/export/encoder')
    feats = model.apply(variables, images)             # (B, D), the trained encoder's features

Your own method or flax backbone joins without editing the library, by an explicit call before
the config is used (``config.method.name`` / ``config.model.backbone`` then name it)::

    ssl_jax.register_method('mymethod', MyMethod)      # a subclass of ssl_jax.methods.base.Method
    ssl_jax.register_backbone('mynet', lambda model_cfg: MyNet(), feature_dim=128)

Everything here imports lazily, so ``import ssl_jax`` loads neither JAX nor any method.
"""
from __future__ import annotations

__all__ = ['pretrain', 'evaluate', 'export', 'load_encoder', 'register_method',
           'register_backbone']


def pretrain(config, workdir: str, mesh=None, train_data=None) -> dict:
  """Pretrains ``config`` in ``workdir`` (resuming from its latest checkpoint) and returns the run
  summary; ``train_data`` optionally replaces ``config.data`` with any iterable of numpy batches
  (see ``ssl_jax.train.loop.train_and_evaluate``)."""
  from ssl_jax.train import loop  # pylint: disable=g-import-not-at-top
  return loop.train_and_evaluate(config, workdir, mesh, train_data)


def evaluate(config, workdir: str, mesh=None, **kw) -> dict:
  """kNN, linear probe and (``config.eval.finetune_steps > 0``) fine-tuning of the latest
  checkpoint in ``workdir``; returns the results, also written to ``workdir/eval.json``
  (see ``ssl_jax.eval.run.evaluate``)."""
  from ssl_jax.eval import run  # pylint: disable=g-import-not-at-top
  return run.evaluate(config, workdir, mesh, **kw)


def __getattr__(name):
  # ``ssl_jax.export`` is the subpackage (``ssl_jax.export.export``, ``.load_encoder``), imported
  # on first use so that ``import ssl_jax`` stays cheap.
  if name == 'export':
    import importlib  # pylint: disable=g-import-not-at-top
    return importlib.import_module('ssl_jax.export')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def load_encoder(directory: str):
  """(flax module, variables) of an encoder written by ``--mode=export``; the same function as
  ``ssl_jax.export.load_encoder``."""
  from ssl_jax.export import encoder  # pylint: disable=g-import-not-at-top
  return encoder.load_encoder(directory)


def register_method(name: str, method_class) -> None:
  """Makes ``config.method.name=name`` build ``method_class(config)`` (a
  ``ssl_jax.methods.base.Method`` subclass); see ``ssl_jax.methods.register_method``."""
  from ssl_jax import methods  # pylint: disable=g-import-not-at-top
  methods.register_method(name, method_class)


def register_backbone(name: str, factory, *, feature_dim=None) -> None:
  """Makes ``config.model.backbone=name`` build ``factory(config.model)``, a flax module taking
  NHWC images (and ``train=``) and returning (B, feature_dim) features; see
  ``ssl_jax.models.register_backbone``."""
  from ssl_jax import models  # pylint: disable=g-import-not-at-top
  models.register_backbone(name, factory, feature_dim=feature_dim)
