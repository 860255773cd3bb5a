"""End-to-end fine-tuning of a pretrained encoder with a linear classifier (MAE's recipe,
He et al. 2022, App. A.2 / BEiT, Bao et al. 2022):

* AdamW, lr = base_lr * batch / 256 with linear warmup + cosine decay;
* layer-wise lr decay (Clark et al. 2020, ELECTRA; BEiT): the parameters of ViT layer ``i`` (0 =
  patch embedding / tokens / position embedding, 1..L = blocks, L + 1 = final norm and head) get
  ``lr * decay^(L + 1 - i)``; a ResNet uses its stem (0), four stages (1..4) and head (5);
* stochastic depth (drop-path) in the ViT blocks, label smoothing, optional mixup (Zhang et al.
  2018: x = lam x_i + (1 - lam) x_j, same mix of the one-hot targets, lam ~ Beta(a, a));
* weight decay on weights only (not biases, norms, cls/register tokens, position embedding);
* head initialised at zero (MAE uses trunc-normal 2e-5: both make the first logits ~0).

Augmentation is the host's random-resized crop + flip (MAE adds RandAugment, random erasing and
CutMix, which are not implemented here). Evaluation: centre crops of ``config.data.eval_split``.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax import models, optim
from ssl_jax.data import pipeline
from ssl_jax.methods.base import apply_module
from ssl_jax.models import swin as swin_lib
from ssl_jax.models import vit as vit_lib
from ssl_jax.train import sharding


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  steps: int = 1000
  batch_size: int = 256
  lr: float = 1e-3               # per 256 examples
  warmup_steps: int = 50
  weight_decay: float = 0.05
  layer_decay: float = 0.75
  drop_path: float = 0.1
  label_smoothing: float = 0.1
  mixup: float = 0.0
  crop_scale: tuple = (0.08, 1.0)
  flip: float = 0.5
  seed: int = 0

  @classmethod
  def from_config(cls, config) -> 'FinetuneConfig':
    e = config.eval
    g = lambda k, d: e.get(f'finetune_{k}', d)
    return cls(steps=g('steps', cls.steps), batch_size=g('batch_size', cls.batch_size),
               lr=g('lr', cls.lr), weight_decay=g('weight_decay', cls.weight_decay),
               layer_decay=g('layer_decay', cls.layer_decay),
               drop_path=g('drop_path', cls.drop_path),
               label_smoothing=g('label_smoothing', cls.label_smoothing),
               mixup=g('mixup', cls.mixup), crop_scale=tuple(config.data.crop_scale),
               flip=config.data.flip, seed=config.seed,
               warmup_steps=min(cls.warmup_steps, max(g('steps', cls.steps) // 10, 1)))


class Classifier(nn.Module):
  """backbone -> pooled feature -> Dense(num_classes), head named ``head``."""
  backbone: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = self.backbone(x, train=train)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                    bias_init=nn.initializers.zeros, name='head')(h)


def swin_block_ids(backbone_params) -> dict[str, int]:
  """Swin module name -> depth index: blocks counted through the stages from 1 (``layers_1_
  blocks_0`` of depths (2, 2) is 3), a stage's patch merging with its last block (SimMIM's
  ``get_swin_layer``)."""
  blocks = sorted((int(m[1]), int(m[2])) for name in backbone_params
                  if (m := re.fullmatch(r'layers_(\d+)_blocks_(\d+)', name)))
  ids = {f'layers_{i}_blocks_{j}': k + 1 for k, (i, j) in enumerate(blocks)}
  for i in {i for i, _ in blocks}:
    ids[f'layers_{i}_downsample'] = max(v for n, v in ids.items() if n.startswith(f'layers_{i}_'))
  return ids


def layer_id(path: tuple[str, ...], num_layers: int, swin_ids: dict[str, int] | None = None
             ) -> int:
  """Depth index of a parameter (path inside the classifier's params) for layer-wise decay;
  ``num_layers`` is L + 1 (ViT: depth + 1; Swin: blocks + 1, ``swin_ids`` from
  :func:`swin_block_ids`; ResNet: 5)."""
  top = path[0]
  if top == 'head':
    return num_layers
  if top != 'backbone':
    raise ValueError(f'unexpected parameter {"/".join(path)}')
  name = path[1]
  if name in ('cls_token', 'reg_token', 'pos_embed', 'patch_embed', 'conv1', 'bn1'):
    return 0
  m = re.fullmatch(r'blocks_(\d+)', name)
  if m:
    return int(m.group(1)) + 1
  if swin_ids and name in swin_ids:
    return swin_ids[name]
  m = re.fullmatch(r'layer(\d+)_\d+', name)
  if m:
    return int(m.group(1))
  return num_layers   # final norm


def layer_decay_scales(params, num_layers: int, decay: float):
  """Pytree of lr multipliers ``decay ** (num_layers - layer_id)``."""
  swin_ids = swin_block_ids(params.get('backbone', {}))
  flat = {path: decay ** (num_layers - layer_id(tuple(str(getattr(k, 'key', k)) for k in path),
                                                 num_layers, swin_ids))
          for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  return jax.tree_util.tree_map_with_path(lambda p, _: flat[p], params)


def scale_by_tree(scales) -> optax.GradientTransformation:
  """Multiplies every update by its leaf of ``scales`` (the layer-wise lr factors)."""
  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map(lambda u, s: u * s, updates, scales), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def _decay_mask(params):
  def keep(path, p):
    names = {str(getattr(k, 'key', k)) for k in path}
    return p.ndim > 1 and not names & {'cls_token', 'reg_token', 'pos_embed',
                                       *optim.NO_DECAY_NAMES}
  return jax.tree_util.tree_map_with_path(keep, params)


def build_optimizer(params, cfg: FinetuneConfig, num_layers: int):
  peak = cfg.lr * cfg.batch_size / 256
  lr = optim.warmup_cosine(peak, cfg.warmup_steps, cfg.steps)
  tx = optax.chain(optax.adamw(lr, b1=0.9, b2=0.999, weight_decay=cfg.weight_decay,
                               mask=_decay_mask),
                   scale_by_tree(layer_decay_scales(params, num_layers, cfg.layer_decay)))
  return tx, lr


def soft_cross_entropy(logits, targets):
  return jnp.mean(optax.softmax_cross_entropy(logits, targets))


def mixup(rng, images, targets, alpha: float):
  """Mixup within the batch (Zhang et al. 2018) with one lam ~ Beta(alpha, alpha) per batch."""
  k1, k2 = jax.random.split(rng)
  lam = jax.random.beta(k1, alpha, alpha)
  perm = jax.random.permutation(k2, images.shape[0])
  return (lam * images + (1 - lam) * images[perm], lam * targets + (1 - lam) * targets[perm])


def _num_layers(backbone) -> int:
  if isinstance(backbone, vit_lib.ViT):
    return backbone.depth + 1
  if isinstance(backbone, swin_lib.Swin):
    return sum(backbone.depths) + 1
  return 5


def finetune(method, params, buffers, config, mesh, train_source, test_source,
             cfg: FinetuneConfig | None = None) -> dict[str, Any]:
  """Fine-tunes ``method``'s encoder (``method.encoder_variables(params, buffers)``) on
  ``train_source``; returns test top-1, the last training loss and the layer-decay setting."""
  cfg = cfg or FinetuneConfig.from_config(config)
  model_cfg = config.model.copy_and_resolve_references()
  model_cfg.drop_path_rate = cfg.drop_path
  backbone = models.build_backbone(model_cfg)
  num_classes = train_source.num_classes
  model = Classifier(backbone, num_classes)
  enc = method.encoder_variables(params, buffers)
  size = config.data.image_size
  # The head starts at zero (kernel and bias), so its shapes are all we need: an eager
  # ``model.init`` compiled every op of the backbone's init one by one (minutes on CPU).
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(cfg.seed),
                          jnp.zeros((1, size, size, 3)))
  ft_params = {'backbone': jax.device_get(enc['params']),
               'head': jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype),
                                              shapes['params']['head'])}
  stats = {'backbone': jax.device_get(enc['batch_stats'])} if 'batch_stats' in enc else {}
  num_layers = _num_layers(backbone)
  tx, _ = build_optimizer(ft_params, cfg, num_layers)
  opt_state = tx.init(ft_params)
  base_key = jax.random.PRNGKey(cfg.seed)

  def train_step(ft_params, stats, opt_state, images, labels, step):
    key = jax.random.fold_in(base_key, step)
    k_mix, k_drop = jax.random.split(key)
    x = method.normalize(images)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), cfg.label_smoothing)
    if cfg.mixup > 0:
      x, targets = mixup(k_mix, x, targets, cfg.mixup)

    def loss_fn(p):
      logits, new_stats = apply_module(model, p, stats, x, train=True, rngs={'dropout': k_drop})
      return soft_cross_entropy(logits, targets), new_stats

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(ft_params)
    updates, opt_state = tx.update(grads, opt_state, ft_params)
    return optax.apply_updates(ft_params, updates), new_stats, opt_state, loss

  rep, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  step_fn = jax.jit(train_step, in_shardings=(rep, rep, rep, data, data, None),
                    out_shardings=(rep, rep, rep, rep), donate_argnums=(0, 1, 2))
  spec = pipeline.CropSpec('view0', size, tuple(cfg.crop_scale), flip=cfg.flip)
  ds = pipeline.train_dataset(train_source, (spec,), global_batch=cfg.batch_size, seed=cfg.seed,
                              process_index=jax.process_index(),
                              process_count=jax.process_count())
  losses = []
  for step in range(cfg.steps):
    batch = ds[step]
    ft_params, stats, opt_state, loss = step_fn(
        ft_params, stats, opt_state, sharding.global_batch(mesh, batch['view0']),
        sharding.global_batch(mesh, batch['label']), step)
    losses.append(loss)
  losses = [float(l) for l in jax.device_get(losses)]

  @jax.jit
  def predict(p, s, images):
    logits, _ = apply_module(model, p, s, method.normalize(images), train=False)
    return jnp.argmax(logits, -1)

  correct = total = 0
  bs = config.eval.batch_size
  for images, labels, valid in pipeline.eval_batches(test_source, size, bs,
                                                     config.data.eval_crop_frac):
    pred = np.asarray(predict(ft_params, stats, sharding.global_batch(mesh, images)))
    correct += int(np.sum((pred == labels) & valid))
    total += int(np.sum(valid))
  return {'finetune_top1': correct / max(total, 1),
          'finetune_first_loss': losses[0] if losses else float('nan'),
          'finetune_final_loss': losses[-1] if losses else float('nan'),
          'finetune_steps': cfg.steps, 'finetune_layer_decay': cfg.layer_decay}
