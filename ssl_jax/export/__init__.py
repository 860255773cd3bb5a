"""Encoder export (Orbax encoder-only checkpoints; timm-layout safetensors) and import of official
PyTorch ViT checkpoints (DINO, MAE, MoCo v3, DINOv2 with or without registers, I-JEPA). Imports
are lazy so ``import ssl_jax.export`` is cheap and needs neither torch nor safetensors."""
from __future__ import annotations


def export(config, workdir: str, mesh=None) -> dict:
  """``--mode=export``: the latest checkpoint's encoder (Orbax, and timm where the backbone has a
  timm twin) to ``workdir/export``; see ``ssl_jax.export.run.export``."""
  from ssl_jax.export import run  # pylint: disable=g-import-not-at-top
  return run.export(config, workdir, mesh)


def load_encoder(directory: str):
  """(flax module, variables) of an encoder written by ``--mode=export`` / ``save_encoder``."""
  from ssl_jax.export import encoder  # pylint: disable=g-import-not-at-top
  return encoder.load_encoder(directory)


def load_vit_checkpoint(path: str, layout: str = 'auto', num_heads: int | None = None):
  """(ViT module, variables) from an official DINO / MAE / MoCo v3 / DINOv2 / I-JEPA PyTorch
  checkpoint file."""
  from ssl_jax.export import torch_import  # pylint: disable=g-import-not-at-top
  return torch_import.load_vit_checkpoint(path, layout, num_heads)


def timm_model(directory: str):
  """The exported encoder as a PyTorch ``timm`` model (eval mode), ready to fine-tune.

  ``directory`` is a workdir (its ``export/timm`` is read), an export folder, or the ``timm``
  folder itself, as written by ``--mode=export``: ``timm_config.json`` names the architecture and
  its arguments, and a CIFAR-stem ResNet gets its 3x3 stem back before the weights are loaded.
  Needs torch, timm and safetensors; features equal ssl_jax's (tests/export/test_timm.py).
  """
  from ssl_jax.export import timm as timm_lib  # pylint: disable=g-import-not-at-top
  return timm_lib.load_timm_model(directory)
