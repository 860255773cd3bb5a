"""Moved to ``ssl_jax.optim`` (optimizers, schedules, decay masks below methods/ and train/).

This name stays so that code written against ``ssl_jax.train.schedules`` keeps working; import
``ssl_jax.optim`` in new code.
"""
from ssl_jax.optim import (NO_DECAY_NAMES, build_optimizer, cosine_increase, decay_mask,  # noqa: F401
                           linear_warmup_constant, scaled_lr, warmup_cosine)
