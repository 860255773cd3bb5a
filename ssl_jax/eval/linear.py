"""Linear probe: a linear classifier trained on the frozen encoder's features.

Protocol (SimCLR / MoCo / DINO / MAE linear evaluation):

* features of the train and test splits are extracted once, in eval mode, from centre crops
  (``eval/features.py``, jitted and sharded over the mesh);
* they are standardised with the train mean and variance (``normalize='standardize'``, MAE's
  affine-free BatchNorm before the head, which makes the learning rate independent of the feature
  scale), or L2-normalised (``'l2'``), or left as they are (``'none'``);
* a linear layer (zero-initialised, as MoCo / DINO) is trained with softmax cross-entropy by SGD
  with momentum (MoCo, DINO) or LARS (MAE, SimCLR), learning rate ``lr * batch / 256`` with a
  linear warmup and a cosine decay to zero, optional weight decay;
* top-1 / top-5 on the test split.

``augmented_linear_probe`` is the MoCo / DINO variant in which the head sees random-resized,
flipped crops through the frozen encoder at every step instead of fixed centre-crop features.

Everything trains inside one jitted ``lax.scan`` per epoch, so a probe on a few thousand images
runs in seconds on a CPU.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax import optim


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  """Hyper-parameters of the linear probe (``config.eval.linear_*`` map onto these)."""
  epochs: int = 100
  batch_size: int = 256
  lr: float = 0.1                 # for a batch of 256 (scaled linearly)
  optimizer: str = 'sgd'          # 'sgd' | 'lars'
  momentum: float = 0.9
  weight_decay: float = 0.0
  warmup_epochs: int = 0
  normalize: str = 'standardize'  # 'standardize' | 'l2' | 'none'
  seed: int = 0

  @classmethod
  def from_config(cls, eval_cfg) -> 'ProbeConfig':
    g = lambda k, d: eval_cfg.get(f'linear_{k}', d)
    return cls(epochs=g('epochs', cls.epochs), batch_size=g('batch_size', cls.batch_size),
               lr=g('lr', cls.lr), optimizer=g('optimizer', cls.optimizer),
               momentum=g('momentum', cls.momentum),
               weight_decay=g('weight_decay', cls.weight_decay),
               warmup_epochs=g('warmup_epochs', cls.warmup_epochs),
               normalize=g('normalize', cls.normalize), seed=g('seed', cls.seed))


@dataclasses.dataclass
class FeatureNorm:
  """Feature preprocessing fitted on the training features."""
  kind: str
  mean: Any = None
  std: Any = None

  @classmethod
  def fit(cls, kind: str, feats) -> 'FeatureNorm':
    if kind not in ('standardize', 'l2', 'none'):
      raise ValueError(f"normalize={kind!r}: choose 'standardize', 'l2' or 'none'")
    if kind != 'standardize':
      return cls(kind)
    f = np.asarray(feats, np.float64)
    return cls(kind, f.mean(0).astype(np.float32), np.sqrt(f.var(0) + 1e-6).astype(np.float32))

  def __call__(self, x):
    if self.kind == 'standardize':
      return (x - self.mean) / self.std
    if self.kind == 'l2':
      return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return x


def init_head(dim: int, num_classes: int):
  return {'kernel': jnp.zeros((dim, num_classes), jnp.float32),
          'bias': jnp.zeros((num_classes,), jnp.float32)}


def apply_head(head, x):
  return x @ head['kernel'] + head['bias']


def build_optimizer(cfg: ProbeConfig, steps_per_epoch: int):
  """(optax transformation, schedule): SGD-momentum or LARS with warmup + cosine."""
  total = max(cfg.epochs * steps_per_epoch, 1)
  peak = cfg.lr * cfg.batch_size / 256
  lr = optim.warmup_cosine(peak, cfg.warmup_epochs * steps_per_epoch, total)
  if cfg.optimizer == 'sgd':
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=optim.decay_mask),
                     optax.sgd(lr, momentum=cfg.momentum))
  elif cfg.optimizer == 'lars':
    tx = optax.lars(lr, weight_decay=cfg.weight_decay, weight_decay_mask=optim.decay_mask,
                    trust_ratio_mask=optim.decay_mask, momentum=cfg.momentum)
  else:
    raise ValueError(f"linear probe optimizer={cfg.optimizer!r}: choose 'sgd' or 'lars'")
  return tx, lr


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
  """Mean softmax cross-entropy with optional label smoothing (Szegedy et al. 2016)."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing) \
      if label_smoothing else jax.nn.one_hot(labels, num_classes)
  return jnp.mean(optax.softmax_cross_entropy(logits, targets))


@functools.partial(jax.jit, static_argnames=('tx', 'batch_size', 'num_classes'))
def _train_epoch(head, opt_state, feats, labels, key, *, tx, batch_size: int, num_classes: int):
  """One shuffled pass (dropping the last partial batch) of minibatch updates, in a scan."""
  n = feats.shape[0]
  steps = n // batch_size
  perm = jax.random.permutation(key, n)[:steps * batch_size].reshape(steps, batch_size)

  def step(carry, idx):
    head, opt_state = carry
    loss, grads = jax.value_and_grad(
        lambda h: cross_entropy(apply_head(h, feats[idx]), labels[idx], num_classes))(head)
    updates, opt_state = tx.update(grads, opt_state, head)
    return (optax.apply_updates(head, updates), opt_state), loss

  (head, opt_state), losses = jax.lax.scan(step, (head, opt_state), perm)
  return head, opt_state, losses.mean()


def train_linear(train_feats, train_labels, num_classes: int, cfg: ProbeConfig = ProbeConfig()):
  """Trains the probe; returns (head params, FeatureNorm, per-epoch mean losses)."""
  norm = FeatureNorm.fit(cfg.normalize, train_feats)
  feats = norm(jnp.asarray(train_feats, jnp.float32))
  labels = jnp.asarray(train_labels, jnp.int32)
  bs = min(cfg.batch_size, feats.shape[0])
  cfg = dataclasses.replace(cfg, batch_size=bs)
  tx, _ = build_optimizer(cfg, feats.shape[0] // bs)
  head = init_head(feats.shape[1], num_classes)
  opt_state = tx.init(head)
  key = jax.random.PRNGKey(cfg.seed)
  losses = []
  for epoch in range(cfg.epochs):
    head, opt_state, loss = _train_epoch(head, opt_state, feats, labels,
                                         jax.random.fold_in(key, epoch), tx=tx, batch_size=bs,
                                         num_classes=num_classes)
    losses.append(loss)
  return head, norm, [float(l) for l in jax.device_get(losses)]


def topk_accuracy(logits, labels, ks=(1, 5)) -> dict[str, float]:
  logits, labels = np.asarray(logits), np.asarray(labels)
  order = np.argsort(-logits, axis=1)
  return {f'top{k}': float(np.mean(np.any(order[:, :k] == labels[:, None], axis=1)))
          for k in ks if k <= logits.shape[1]}


def linear_probe(train_feats, train_labels, test_feats, test_labels, num_classes: int,
                 cfg: ProbeConfig = ProbeConfig()) -> dict[str, float]:
  """Trains the probe on (train_feats, train_labels); returns test top-1/top-5 (in [0, 1]),
  train top-1 and the final training loss."""
  head, norm, losses = train_linear(train_feats, train_labels, num_classes, cfg)
  logits = apply_head(head, norm(jnp.asarray(test_feats, jnp.float32)))
  train_logits = apply_head(head, norm(jnp.asarray(train_feats, jnp.float32)))
  out = topk_accuracy(logits, test_labels)
  out['train_top1'] = topk_accuracy(train_logits, train_labels, ks=(1,))['top1']
  out['final_loss'] = losses[-1] if losses else float('nan')
  return out


def augmented_linear_probe(feature_fn, params, buffers, train_source, test_feats, test_labels, *,
                           mesh, image_size: int, cfg: ProbeConfig = ProbeConfig(),
                           clean_train_feats=None, crop_scale=(0.08, 1.0), flip: float = 0.5,
                           steps: int | None = None) -> dict[str, float]:
  """MoCo / DINO linear evaluation: the head is trained on features of random-resized (and
  flipped) crops through the frozen encoder, recomputed at every step; tested on the centre-crop
  ``test_feats``. Standardisation statistics come from ``clean_train_feats`` when given."""
  from ssl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from ssl_jax.train import sharding  # pylint: disable=g-import-not-at-top
  spec = pipeline.CropSpec('view0', image_size, tuple(crop_scale), flip=flip)
  bs = cfg.batch_size
  ds = pipeline.train_dataset(train_source, (spec,), global_batch=bs, seed=cfg.seed,
                              process_index=jax.process_index(),
                              process_count=jax.process_count())
  steps_per_epoch = max(len(train_source) // bs, 1)
  total = steps if steps is not None else cfg.epochs * steps_per_epoch
  tx, _ = build_optimizer(dataclasses.replace(cfg, epochs=max(total // steps_per_epoch, 1)),
                          steps_per_epoch)
  num_classes = train_source.num_classes
  kind = cfg.normalize
  if kind == 'standardize' and clean_train_feats is None:
    kind = 'none'   # no statistics to standardise with
  norm = FeatureNorm.fit(kind, clean_train_feats)

  @jax.jit
  def head_step(head, opt_state, feats, labels):
    loss, grads = jax.value_and_grad(
        lambda h: cross_entropy(apply_head(h, norm(feats)), labels, num_classes))(head)
    updates, opt_state = tx.update(grads, opt_state, head)
    return optax.apply_updates(head, updates), opt_state, loss

  head, opt_state = None, None
  loss = jnp.nan
  for i in range(total):
    batch = ds[i]
    feats = feature_fn(params, buffers, sharding.global_batch(mesh, batch['view0']))
    labels = sharding.global_batch(mesh, batch['label'])
    if head is None:
      head = init_head(feats.shape[1], num_classes)
      opt_state = tx.init(head)
    head, opt_state, loss = head_step(head, opt_state, feats, labels)
  logits = apply_head(head, norm(jnp.asarray(test_feats, jnp.float32)))
  out = topk_accuracy(logits, test_labels)
  out['final_loss'] = float(loss)
  return out
