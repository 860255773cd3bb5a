"""Online linear evaluation during pretraining (BYOL, Grill et al. 2020, Sec. 4 / App. C.1):
a linear classifier on ``stop_gradient`` of the encoder's features, trained alongside the
self-supervised objective, so a run reports a label-aware accuracy at every logged step at the
cost of one extra eval-mode forward of one view.

``OnlineLinear(method, config)`` wraps *any* Method without changing it: the trainer sees a
Method (``config.eval.online_linear=True`` makes experiment.build_method wrap it), and the wrapped method
sees exactly its own buffers and views. The head and its optimizer state live next to the method's
buffers (``buffers = {'method': ..., 'online': ...}``), so they are checkpointed and restored with
the run, never touched by the pretraining optimizer, and no gradient reaches the encoder:

    images   = eval-normalised crop of the first view (no colour augmentation)
    h        = stop_gradient(method.features(params, buffers, images))       # (B, D)
    h        = (h - mean_B(h)) / std_B(h)                                     # affine-free BN
    logits   = h @ W + b ;  W, b <- SGD-momentum step on cross-entropy(logits, batch['label'])

Metrics ``online_top1`` (accuracy of the head *before* its update on this batch, i.e. on data it
has not been fitted to yet) and ``online_loss`` are logged with the training metrics.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

_IMAGES, _LABELS = '_online_images', '_online_labels'


def standardize_batch(h):
  """Affine-free BatchNorm of a (B, D) feature batch (global over the mesh under jit)."""
  mean = jnp.mean(h, axis=0, keepdims=True)
  var = jnp.var(h, axis=0, keepdims=True)
  return (h - mean) * jax.lax.rsqrt(var + 1e-5)


class OnlineLinear:
  """A Method wrapper adding a stop-gradient online linear classifier (see module docstring).

  Every attribute not defined here is the wrapped method's, so the wrapper is a drop-in Method.
  """

  def __init__(self, method, config, num_classes: int | None = None):
    self.inner = method
    e = config.eval
    if num_classes is None:
      num_classes = e.get('online_num_classes', 0) or None
    if num_classes is None:
      from ssl_jax.data import sources  # pylint: disable=g-import-not-at-top
      num_classes = sources.get_source(config.data, config.data.train_split).num_classes
    self.num_classes = int(num_classes)
    self.tx = optax.sgd(e.get('online_lr', 0.1), momentum=0.9)
    self.view_name = method.crop_specs()[0].name

  def __getattr__(self, name):
    return getattr(self.inner, name)

  # -- pieces the trainer calls -------------------------------------------------------------------
  def init(self, rng, batch):
    params, buffers = self.inner.init(rng, batch)
    head = {'kernel': jnp.zeros((self.inner.feature_dim, self.num_classes), jnp.float32),
            'bias': jnp.zeros((self.num_classes,), jnp.float32)}
    return params, {'method': buffers, 'online': {'head': head, 'opt': self.tx.init(head)}}

  def views(self, batch, rng):
    views = dict(self.inner.views(batch, rng))
    views[_IMAGES] = batch[self.view_name]
    views[_LABELS] = batch['label']
    return views

  def loss(self, params, state, views, rng):
    views = dict(views)
    images, labels = views.pop(_IMAGES), views.pop(_LABELS)
    inner_state = state.replace(buffers=state.buffers['method'])
    loss, (metrics, inner_buffers) = self.inner.loss(params, inner_state, views, rng)
    online, online_metrics = self._online_update(params, state.buffers, images, labels)
    metrics = dict(metrics, **online_metrics)
    return loss, (metrics, {'method': inner_buffers, 'online': online})

  def after_update(self, state):
    inner = self.inner.after_update(state.replace(buffers=state.buffers['method']))
    return inner.replace(buffers={'method': inner.buffers, 'online': state.buffers['online']})

  def features(self, params, buffers, images_uint8):
    return self.inner.features(params, buffers['method'], images_uint8)

  def encoder_variables(self, params, buffers):
    return self.inner.encoder_variables(params, buffers['method'])

  # -- the head -----------------------------------------------------------------------------------
  def _online_update(self, params, buffers, images, labels):
    h = jax.lax.stop_gradient(self.inner.features(params, buffers['method'], images))
    h = standardize_batch(h)
    labels = labels.astype(jnp.int32)
    head, opt = buffers['online']['head'], buffers['online']['opt']

    def ce(hd):
      logits = h @ hd['kernel'] + hd['bias']
      onehot = jax.nn.one_hot(labels, self.num_classes)
      return jnp.mean(optax.softmax_cross_entropy(logits, onehot)), logits

    (loss, logits), grads = jax.value_and_grad(ce, has_aux=True)(head)
    updates, opt = self.tx.update(grads, opt, head)
    head = optax.apply_updates(head, updates)
    top1 = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
    return {'head': head, 'opt': opt}, {'online_top1': top1, 'online_loss': loss}
