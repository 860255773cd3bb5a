"""TrainState: flax's TrainState plus what self-supervised methods carry between steps."""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax.training import train_state


class TrainState(train_state.TrainState):
  """Student params and optimizer state (from flax), plus

  * ``buffers``: the method's non-trainable state — BatchNorm statistics (``batch_stats``), EMA
    teacher params (``teacher``), momentum queues, DINO centers... A pytree the method owns; the
    trainer only carries, shards and checkpoints it.
  * ``skipped``: how many updates the non-finite guard has skipped.

  Randomness is not stored: the step key is ``fold_in(PRNGKey(config.seed), step)``, so a resumed
  run draws the same keys as an uninterrupted one.
  """
  buffers: Any = None
  skipped: Any = None

  @classmethod
  def create(cls, *, params, tx, buffers, **kw):
    return super().create(apply_fn=None, params=params, tx=tx, buffers=buffers,
                          skipped=jnp.zeros((), jnp.int32), **kw)
