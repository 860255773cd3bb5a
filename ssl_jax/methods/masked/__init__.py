"""Masked image modelling: MAE, SimMIM, BEiT (with its VQ-VAE tokenizer) and MultiMAE.

All four pretrain a ViT from one view per image (``view0``, a random-resized crop made on the host)
that is normalised on device; they differ in what is hidden and what is predicted:

=========  ==========================================  ==========================================
method     encoder input                               target (masked patches only)
=========  ==========================================  ==========================================
MAE        visible patches only (75 % removed)          pixels (optionally per-patch normalised)
SimMIM     all positions, mask token on masked ones     raw pixels, L1
BEiT       all positions, mask token (block-wise 40 %)  the VQ tokenizer's code index, cross-entropy
MultiMAE   visible tokens of RGB + other modalities     pixels of every modality
=========  ==========================================  ==========================================

:class:`MaskedImageMethod` holds what they share: the ViT check, the single crop, normalisation,
eval features (the encoder on *all* patches, no mask) and reconstruction-grid helpers used by
``python -m ssl_jax.viz.reconstruction``.
"""
from __future__ import annotations

# Defined one layer down (methods/masked_image.py) so CMAE (hybrid/) shares it; re-exported here.
from ssl_jax.methods.masked_image import MaskedImageMethod  # noqa: F401
