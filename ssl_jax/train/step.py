"""The single generic, pure train step shared by every method.

    views = method.views(batch, k_views)             # on-device augmentation / masking
    (loss, (metrics, buffers)), grads = value_and_grad(method.loss)(params, state, views, k_loss)
    state = apply_gradients(...); state = method.after_update(state)

The step is sharding-agnostic: the caller jits it with NamedShardings and the global batch makes
every reduction (negatives, BatchNorm statistics, centers) global. A non-finite loss, gradient or
update keeps the previous params/opt state/buffers (the step counter still advances so the data
moves on) and increments ``state.skipped``; no host sync is needed for that.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _all_finite(tree):
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def make_train_step(method, seed: int, lr_schedule=None):
  """Returns ``train_step(state, batch) -> (state, metrics)`` for ``method``."""
  base_key = jax.random.PRNGKey(seed)

  def train_step(state, batch):
    rng = jax.random.fold_in(base_key, state.step)
    k_views, k_loss = jax.random.split(rng)
    views = method.views(batch, k_views)
    grad_fn = jax.value_and_grad(method.loss, has_aux=True)
    (loss, (metrics, buffers)), grads = grad_fn(state.params, state, views, k_loss)
    finite = jnp.isfinite(loss) & _all_finite(grads)
    new_state = state.apply_gradients(grads=grads, buffers=buffers)
    new_state = method.after_update(new_state)
    # A finite gradient can still give a non-finite update (optimizer moments, EMA teacher, BN
    # statistics overflowing): such a step is skipped too, so the state stays finite.
    finite = finite & _all_finite((new_state.params, new_state.buffers))
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = new_state.replace(
        params=keep(new_state.params, state.params),
        opt_state=keep(new_state.opt_state, state.opt_state),
        buffers=keep(new_state.buffers, state.buffers),
        skipped=state.skipped + (1 - finite.astype(jnp.int32)))
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                   nonfinite=1 - finite.astype(jnp.int32))
    if lr_schedule is not None:
      metrics['lr'] = lr_schedule(state.step)
    return new_state, metrics

  return train_step
