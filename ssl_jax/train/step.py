"""The single generic, pure train step shared by every method.

    views = method.views(batch, k_views)             # on-device augmentation / masking
    (loss, (metrics, buffers)), grads = value_and_grad(method.loss)(params, state, views, k_loss)
    state = apply_gradients(...); state = method.after_update(state)

The step is sharding-agnostic: the caller jits it with NamedShardings and the global batch makes
every reduction (negatives, BatchNorm statistics, centers) global. A non-finite loss, gradient or
update keeps the previous params/opt state/buffers (the step counter still advances so the data
moves on) and increments ``state.skipped``; no host sync is needed for that. A gradient counts as
non-finite when the global gradient norm is (any Inf/NaN, or a norm past float32's range).

Gradient accumulation (``accum_steps > 1``): the batch is split into ``accum_steps`` strided
micro-batches (rows i, i+k, i+2k, ...: each micro-batch stays evenly spread over the data axis),
``lax.scan`` runs forward/backward on each with the method buffers threaded through (a queue or
center sees every micro-batch in order), and one optimizer update applies the mean gradient.
Batch statistics (negatives, BatchNorm, centers) are those of a micro-batch, as in PyTorch
accumulation: it trades the memory of a large batch for its compute, not for its statistics.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ssl_jax.train import sharding


def _all_finite(tree):
  """Whether every float in ``tree`` is finite: one reduction per leaf, ``sum(x * 0)``, which is
  0 for finite leaves and NaN as soon as one element is +-inf or NaN (and cannot overflow). Half
  the instructions of ``all(isfinite(x))``, which XLA:CPU lowers as two reductions per leaf."""
  leaves = [jnp.sum(x * 0, dtype=jnp.float32) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.isfinite(sum(leaves)) if leaves else jnp.array(True)


def _keep_if(ok, new, old):
  """``new`` where the scalar ``ok`` holds, else ``old`` (pytrees of one structure).

  On CPU one conditional over the whole tree: a per-leaf ``where`` is one select kernel per
  parameter, optimizer and buffer leaf, and made the tiny test models' train step compile ~1.5x
  slower (docs/performance.md, "Compile time"). Elsewhere the per-leaf select: XLA:GPU reads a
  conditional's predicate back to the host, a synchronisation in every step."""
  if jax.default_backend() == 'cpu':
    return jax.lax.cond(ok, lambda: new, lambda: old)
  return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)


def _micro_batches(batch, k: int):
  """(B, ...) leaves -> (k, B/k, ...): micro-batch i holds rows i, i+k, i+2k, ..."""
  return jax.tree_util.tree_map(
      lambda x: x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1), batch)


def make_train_step(method, seed: int, lr_schedule=None, accum_steps: int = 1):
  """Returns ``train_step(state, batch) -> (state, metrics)`` for ``method``."""
  base_key = jax.random.PRNGKey(seed)
  grad_fn = jax.value_and_grad(method.loss, has_aux=True)

  def loss_and_grads(state, batch, rng):
    k_views, k_loss = jax.random.split(rng)
    views = method.views(batch, k_views)
    return grad_fn(state.params, state, views, k_loss)

  def accumulated(state, batch, rng):
    def body(carry, xs):
      buffers, grad_sum = carry
      micro, i = xs
      (loss, (metrics, buffers)), grads = loss_and_grads(
          state.replace(buffers=buffers), micro, jax.random.fold_in(rng, i))
      grad_sum = jax.tree_util.tree_map(jnp.add, grad_sum, grads)
      return (buffers, grad_sum), (loss, metrics)

    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    (buffers, grad_sum), (losses, metrics) = jax.lax.scan(
        body, (state.buffers, zeros), (_micro_batches(batch, accum_steps),
                                       jnp.arange(accum_steps)))
    grads = jax.tree_util.tree_map(lambda g: g / accum_steps, grad_sum)
    metrics = jax.tree_util.tree_map(lambda m: jnp.mean(m, axis=0), metrics)
    return (jnp.mean(losses), (metrics, buffers)), grads

  def train_step(state, batch):
    rng = jax.random.fold_in(base_key, state.step)
    if accum_steps > 1:
      (loss, (metrics, buffers)), grads = accumulated(state, batch, rng)
    else:
      (loss, (metrics, buffers)), grads = loss_and_grads(state, batch, rng)
    # The global gradient norm (also a metric) is finite iff every gradient is (or its square sum
    # overflows float32, a gradient of ~1e19: skipped as well). One reduction per leaf serves the
    # check and the metric; a second per-leaf is_finite pass cost the step ~12% of its compile time.
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = state.apply_gradients(grads=grads, buffers=buffers)
    new_state = method.after_update(new_state)
    # A finite gradient can still give a non-finite update (optimizer moments, EMA teacher, BN
    # statistics overflowing): such a step is skipped too, so the state stays finite.
    finite = finite & _all_finite((new_state.params, new_state.buffers))
    parts = lambda s: (s.params, s.opt_state, s.buffers)
    params, opt_state, buffers = _keep_if(finite, parts(new_state), parts(state))
    new_state = new_state.replace(
        params=params, opt_state=opt_state, buffers=buffers,
        skipped=state.skipped + (1 - finite.astype(jnp.int32)))
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                   nonfinite=1 - finite.astype(jnp.int32))
    if lr_schedule is not None:
      metrics['lr'] = lr_schedule(state.step)
    return new_state, metrics

  return train_step


def jit_train_step(method, config, mesh, state_sharding, lr_schedule=None):
  """The method's generic train step, jitted over ``mesh``: state in ``state_sharding`` (donated),
  batch split over the data axes, metrics replicated."""
  train_step = make_train_step(method, config.seed, lr_schedule,
                               accum_steps=config.optim.get('grad_accum_steps', 1))
  return jax.jit(train_step, in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
                 out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=(0,))
