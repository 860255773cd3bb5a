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
