"""BatchNorm with two-pass batch variance, used by every BatchNorm in the library.

flax's ``nn.BatchNorm`` computes the batch variance as ``E[x^2] - E[x]^2`` by default
(``use_fast_variance=True``), which cancels catastrophically when a channel's mean is large next
to its spread (e.g. a Dense layer after ReLU + average pooling): its rounding error is ~eps *
mean^2 / var. Summed in another order (one device vs eight, or another XLA vectorisation) the
statistics then differ by ~1e-3 relative, and the running averages and the training trajectory
with them. ``E[(x - E[x])^2]`` (PyTorch's result, Ioffe & Szegedy 2015's definition) costs one
more pass over the activations and keeps them equal to float32 rounding.
"""
from __future__ import annotations

import functools

import flax.linen as nn

BatchNorm = functools.partial(nn.BatchNorm, use_fast_variance=False)
