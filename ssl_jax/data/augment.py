"""On-device image augmentations for self-supervised views (pure jnp, jittable).

The host pipeline (data/pipeline.py) delivers uint8 NHWC batches that are already
randomly cropped (and possibly flipped). Everything photometric happens here, on the
accelerator, inside the jitted train step: `method.views(batch, rng)` calls
`augment_batch(rng, batch, recipe)` once per view.

Conventions
- A single-image op takes `(key, img, ...)` with `img` HWC float in [0, 1] and draws its
  own randomness from `key`. Its `*_batch` twin takes `(key, images, ...)` NHWC, splits
  `key` into one key per example and vmaps, so every example gets independent draws.
- Deterministic building blocks (`adjust_*`, `rgb_to_grayscale`, `apply_gaussian_blur`,
  `apply_solarize`, `normalize`) take fixed parameters; they are what the tests compare
  against PIL / numpy references.
- Strengths and probabilities are static Python numbers (an op with p == 0 or strength
  0 is not traced at all, so it is an exact identity). A recipe is therefore static:
  close over it, e.g. `jax.jit(lambda k, x: augment_batch(k, x, recipe))`.

Semantics follow torchvision's float-tensor ops (the reference implementations used by
SimCLR/MoCo/BYOL/DINO PyTorch code), not tf.image: see each docstring for the formula and
for where dm_pix is used (only where its formula is the same as torchvision's).

Recipes (plain data) live in `RECIPES`; `get_recipe(name_or_dict, **overrides)` returns a
validated, fully expanded dict. Format:

    dict(
        flip=0.5,                                   # p of a horizontal flip
        color_jitter=dict(p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
        grayscale=0.2,                              # p
        blur=dict(p=0.5, sigma=(0.1, 2.0), kernel_frac=0.1),  # or kernel_size=23;
                                                    # padding='reflect' (default) | 'zeros'
        solarize=0.2,                               # p, or dict(p=0.2, threshold=0.5)
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    )

Missing keys (or None values) mean "off"; unknown keys raise ValueError naming the key.
RECIPES leave `flip` out because the host pipeline flips the crops (see RECIPES).
Ops are applied in the order of the papers: flip -> colour jitter -> grayscale -> blur
-> solarize -> normalize.
"""

from __future__ import annotations

import collections.abc
import functools
from typing import Any, Callable, Mapping, Sequence

import dm_pix
import jax
import jax.numpy as jnp

from ssl_jax.data import image_ops

__all__ = [
    'IMAGENET_MEAN', 'IMAGENET_STD', 'GRAY_WEIGHTS', 'RECIPES',
    'adjust_brightness', 'adjust_contrast', 'adjust_saturation', 'adjust_hue',
    'rgb_to_grayscale', 'gaussian_kernel1d', 'blur_kernel_size', 'apply_gaussian_blur',
    'apply_solarize', 'normalize',
    'sample_color_jitter', 'color_jitter', 'random_grayscale', 'gaussian_blur', 'solarize',
    'random_flip',
    'color_jitter_batch', 'random_grayscale_batch', 'gaussian_blur_batch',
    'solarize_batch', 'random_flip_batch',
    'augment_batch', 'validate_recipe', 'get_recipe',
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_WEIGHTS = image_ops.GRAY_WEIGHTS


# ----------------------------------------------------------------------------------------
# Deterministic building blocks (fixed parameters).
# ----------------------------------------------------------------------------------------


def _blend(img1: jax.Array, img2: jax.Array, ratio) -> jax.Array:
  """torchvision `_blend`: clip(ratio * img1 + (1 - ratio) * img2, 0, 1)."""
  return jnp.clip(ratio * img1 + (1.0 - ratio) * img2, 0.0, 1.0)


def rgb_to_grayscale(img: jax.Array, keep_channels: bool = True) -> jax.Array:
  """Luma L = 0.299 R + 0.587 G + 0.114 B (PIL `convert('L')`, ITU-R 601-2).

  Written here rather than dm_pix.rgb_to_grayscale, which uses 0.2989 (TF's weights).
  Returns HW3 (the gray value repeated) when keep_channels, else HW1.
  """
  w = jnp.asarray(GRAY_WEIGHTS, img.dtype)
  gray = jnp.tensordot(img, w, axes=([-1], [0]))[..., None]
  if keep_channels:
    gray = jnp.broadcast_to(gray, img.shape)
  return gray


def adjust_brightness(img: jax.Array, factor) -> jax.Array:
  """torchvision `adjust_brightness`: clip(factor * img, 0, 1).

  Own code: dm_pix.adjust_brightness is additive (tf.image semantics).
  """
  return _blend(img, jnp.zeros_like(img), factor)


def adjust_contrast(img: jax.Array, factor) -> jax.Array:
  """torchvision `adjust_contrast`: clip(f * img + (1 - f) * mean(gray(img)), 0, 1).

  The mean is the scalar mean of the grayscale image over all pixels. Own code:
  dm_pix.adjust_contrast uses per-channel means (tf.image semantics).
  """
  mean = jnp.mean(rgb_to_grayscale(img, keep_channels=False))
  return _blend(img, mean, factor)


def adjust_saturation(img: jax.Array, factor) -> jax.Array:
  """torchvision `adjust_saturation`: clip(f * img + (1 - f) * gray(img), 0, 1).

  Same as PIL ImageEnhance.Color. Own code: dm_pix.adjust_saturation scales S in HSV
  (tf.image semantics), which differs.
  """
  return _blend(img, rgb_to_grayscale(img), factor)


def adjust_hue(img: jax.Array, delta) -> jax.Array:
  """torchvision `adjust_hue`: RGB -> HSV, h <- (h + delta) mod 1, HSV -> RGB.

  delta is a fraction of the full hue circle, in [-0.5, 0.5]. Uses dm_pix.adjust_hue,
  whose formula is exactly this one. The round trip keeps values in [0, 1]; the clip
  only removes float round-off.
  """
  return jnp.clip(dm_pix.adjust_hue(img, delta), 0.0, 1.0)


def gaussian_kernel1d(sigma, kernel_size: int) -> jax.Array:
  """torchvision `_get_gaussian_kernel1d`: exp(-x^2 / (2 sigma^2)) normalised to sum 1,
  x = -(k-1)/2 .. (k-1)/2."""
  half = (kernel_size - 1) / 2.0
  x = jnp.linspace(-half, half, kernel_size, dtype=jnp.float32)
  k = jnp.exp(-0.5 * jnp.square(x / sigma))
  return k / jnp.sum(k)


def blur_kernel_size(image_size: int, kernel_frac: float = 0.1) -> int:
  """Odd kernel size of ~kernel_frac of the image side (SimCLR App. A: 10% of the side).

  As SimCLR's code: k = int(size * frac), then 2 * (k // 2) + 1 (so 224 -> 23, the BYOL /
  DINO value); at least 3 so a blur never silently degenerates into the identity.
  """
  k = int(image_size * kernel_frac)
  return max(3, 2 * (k // 2) + 1)


def _filter_1d(x: jax.Array, k: jax.Array, axis: int) -> jax.Array:
  """'VALID' correlation of every channel of x with the 1-D kernel k along ``axis``, as a sum of
  shifted slices (elementwise; XLA:CPU runs the equivalent depthwise convolution, batched into a
  grouped one under vmap, several times slower)."""
  n = x.shape[axis] - k.shape[0] + 1
  out = k[0] * jax.lax.slice_in_dim(x, 0, n, axis=axis)
  for i in range(1, k.shape[0]):
    out = out + k[i] * jax.lax.slice_in_dim(x, i, i + n, axis=axis)
  return out


def apply_gaussian_blur(img: jax.Array, sigma, kernel_size: int,
                        padding: str = 'reflect') -> jax.Array:
  """Separable Gaussian blur with a fixed sigma (may be traced) and static odd kernel size.

  padding='reflect' pads by mirroring without repeating the edge (numpy/torch 'reflect',
  scipy 'mirror'), as torchvision `gaussian_blur`; padding='zeros' is the 'SAME' zero
  padding of the SimCLR/BYOL TF code (darkens borders). Own code (rather than
  dm_pix.gaussian_blur) because dm_pix supports only zero padding.
  """
  if kernel_size % 2 != 1 or kernel_size < 1:
    raise ValueError(f'kernel_size must be a positive odd int, got {kernel_size}')
  h, w = img.shape[0], img.shape[1]
  r = kernel_size // 2
  k = gaussian_kernel1d(sigma, kernel_size).astype(img.dtype)
  if padding == 'reflect':
    if r > h - 1 or r > w - 1:
      raise ValueError(f'blur kernel_size {kernel_size} too large for reflect padding '
                       f'of a {h}x{w} image')
    x = jnp.pad(img, ((r, r), (r, r), (0, 0)), mode='reflect')
  elif padding == 'zeros':
    x = jnp.pad(img, ((r, r), (r, r), (0, 0)))
  else:
    raise ValueError(f"blur padding must be 'reflect' or 'zeros', got {padding!r}")
  x = _filter_1d(x, k, axis=1)  # along W
  return _filter_1d(x, k, axis=0)  # along H


def apply_solarize(img: jax.Array, threshold=0.5) -> jax.Array:
  """x -> 1 - x where x >= threshold (PIL ImageOps.solarize; BYOL Table 6).

  For uint8 input u, threshold 0.5 is PIL's threshold=128. Uses the formula of
  dm_pix.solarize (`where(x < t, x, 1 - x)`).
  """
  return dm_pix.solarize(img, threshold)


def normalize(img: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """(img - mean) / std per channel (channels last; any leading shape)."""
  mean = jnp.asarray(mean, img.dtype)
  std = jnp.asarray(std, img.dtype)
  return (img - mean) / std


# ----------------------------------------------------------------------------------------
# Random single-image ops: (key, img HWC in [0, 1], ...) -> img.
# ----------------------------------------------------------------------------------------


def _check_p(p, name: str = 'p') -> float:
  if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
    raise ValueError(f'{name} must be a probability in [0, 1], got {p!r}')
  return float(p)


def _with_prob(key, p: float, new: jax.Array, old: jax.Array) -> jax.Array:
  """RandomApply: `new` with probability p, else `old` (p is static)."""
  if p >= 1.0:
    return new
  return jnp.where(jax.random.bernoulli(key, p), new, old)


def _jitter_range(value, name: str, center: float | None, bound: tuple[float, float]):
  """torchvision ColorJitter `_check_input`: v -> [center - v, center + v] clipped to
  bound, or an explicit (lo, hi) pair. Returns None when the op is off."""
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    if value < 0:
      raise ValueError(f'color_jitter.{name} must be >= 0, got {value!r}')
    if center is None:  # hue
      lo, hi = -float(value), float(value)
    else:
      lo, hi = max(bound[0], center - value), center + value
  elif isinstance(value, (tuple, list)) and len(value) == 2:
    lo, hi = float(value[0]), float(value[1])
  else:
    raise ValueError(f'color_jitter.{name} must be a number or a (min, max) pair, '
                     f'got {value!r}')
  if not bound[0] <= lo <= hi <= bound[1]:
    raise ValueError(f'color_jitter.{name} range ({lo}, {hi}) outside {bound}')
  if center is None and lo == hi == 0.0 or center is not None and lo == hi == center:
    return None
  return lo, hi


_JITTER_OPS = (
    ('brightness', adjust_brightness, 1.0, (0.0, float('inf'))),
    ('contrast', adjust_contrast, 1.0, (0.0, float('inf'))),
    ('saturation', adjust_saturation, 1.0, (0.0, float('inf'))),
    ('hue', adjust_hue, None, (-0.5, 0.5)),
)


def _enabled_jitter_ops(brightness, contrast, saturation, hue):
  values = dict(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)
  ops = []
  for name, fn, center, bound in _JITTER_OPS:
    rng = _jitter_range(values[name], name, center, bound)
    if rng is not None:
      ops.append((name, fn, rng))
  return ops


def sample_color_jitter(key, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
  """The random draws of `color_jitter` (before its RandomApply coin).

  Returns (names, order, factors): `names` are the enabled ops (static tuple), `order`
  a permutation of range(len(names)) (torchvision `randperm(4)`) and `factors[i]` the
  uniform draw for names[i] from its range. `color_jitter(key, ...)` uses the draws of
  `sample_color_jitter(jax.random.split(key)[1], ...)`.
  """
  ops = _enabled_jitter_ops(brightness, contrast, saturation, hue)
  names = tuple(name for name, _, _ in ops)
  if not ops:
    return names, jnp.zeros((0,), jnp.int32), jnp.zeros((0,), jnp.float32)
  k_order, k_factor = jax.random.split(key)
  lo = jnp.asarray([r[0] for _, _, r in ops], jnp.float32)
  hi = jnp.asarray([r[1] for _, _, r in ops], jnp.float32)
  factors = jax.random.uniform(k_factor, (len(ops),), jnp.float32, lo, hi)
  order = jax.random.permutation(k_order, len(ops))
  return names, order, factors


def color_jitter(key, img: jax.Array, brightness=0.0, contrast=0.0, saturation=0.0,
                 hue=0.0, p: float = 1.0) -> jax.Array:
  """RandomApply(ColorJitter(brightness, contrast, saturation, hue), p) as torchvision.

  Factors: brightness/contrast/saturation ~ U[max(0, 1 - v), 1 + v], hue ~ U[-h, h]
  (each may also be an explicit (min, max) pair); a strength of 0 switches the op off.
  The enabled ops run in a random order per example (torchvision permutes them), each
  followed by a clip to [0, 1]: brightness multiplies, contrast blends with the mean of
  the grayscale image, saturation blends with the grayscale image, hue shifts H in HSV.
  Reference: torchvision.transforms.ColorJitter; SimCLR (Chen et al. 2020) App. A.
  """
  p = _check_p(p, 'color_jitter.p')
  ops = _enabled_jitter_ops(brightness, contrast, saturation, hue)
  if p == 0.0 or not ops:
    return img
  k_apply, k_draw = jax.random.split(key)
  names, order, factors = sample_color_jitter(k_draw, brightness, contrast, saturation, hue)
  branches = [functools.partial(lambda f, i, x: f(x, factors[i]), fn, i)
              for i, (_, fn, _) in enumerate(ops)]
  out = img
  if 'hue' not in names or len(names) == 1:
    for step in range(len(ops)):
      out = jax.lax.switch(order[step], branches, out)
    return _with_prob(k_apply, p, out, img)
  # Same ops in the same order, but the (RGB <-> HSV) hue op is evaluated once: under vmap a
  # switch computes every branch, so the plain loop above would shift hue len(ops) times.
  # Steps before hue's position run the cheap ops (hue's branch is the identity), then hue,
  # then the steps after it.
  h = names.index('hue')
  cheap = list(branches)
  cheap[h] = lambda x: x
  pos = jnp.argmax(order == h)
  for step in range(len(ops)):
    out = jnp.where(step < pos, jax.lax.switch(order[step], cheap, out), out)
  out = branches[h](out)
  for step in range(len(ops)):
    out = jnp.where(step > pos, jax.lax.switch(order[step], cheap, out), out)
  return _with_prob(k_apply, p, out, img)


def random_grayscale(key, img: jax.Array, p: float = 0.2) -> jax.Array:
  """torchvision RandomGrayscale(p): the 3-channel luma image with probability p."""
  p = _check_p(p, 'grayscale')
  if p == 0.0:
    return img
  return _with_prob(key, p, rgb_to_grayscale(img), img)


def gaussian_blur(key, img: jax.Array, sigma_min: float = 0.1, sigma_max: float = 2.0,
                  kernel_size: int | None = None, p: float = 1.0,
                  padding: str = 'reflect') -> jax.Array:
  """RandomApply(GaussianBlur(kernel_size, sigma ~ U[sigma_min, sigma_max]), p).

  kernel_size None -> `blur_kernel_size(H, 0.1)` (10% of the side, SimCLR App. A /
  BYOL Table 6: 23 px at 224). Separable; padding as `apply_gaussian_blur`.
  """
  p = _check_p(p, 'blur.p')
  if p == 0.0:
    return img
  if kernel_size is None:
    kernel_size = blur_kernel_size(img.shape[0])
  k_apply, k_sigma = jax.random.split(key)
  sigma = jax.random.uniform(k_sigma, (), jnp.float32, sigma_min, sigma_max)
  blurred = apply_gaussian_blur(img, sigma, kernel_size, padding)
  return _with_prob(k_apply, p, blurred.astype(img.dtype), img)


def solarize(key, img: jax.Array, threshold: float = 0.5, p: float = 0.2) -> jax.Array:
  """RandomSolarize: x -> 1 - x for x >= threshold, with probability p (BYOL Table 6)."""
  p = _check_p(p, 'solarize.p')
  if p == 0.0:
    return img
  return _with_prob(key, p, apply_solarize(img, threshold), img)


def random_flip(key, img: jax.Array, p: float = 0.5) -> jax.Array:
  """torchvision RandomHorizontalFlip(p): reverse the W axis with probability p."""
  p = _check_p(p, 'flip')
  if p == 0.0:
    return img
  return _with_prob(key, p, img[:, ::-1, :], img)


def _over_batch(fn: Callable) -> Callable:
  """(key, img, ...) -> (key, images NHWC, ...): one key per example, vmapped."""

  @functools.wraps(fn)
  def batched(key, images: jax.Array, *args, **kwargs) -> jax.Array:
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(lambda k, x: fn(k, x, *args, **kwargs))(keys, images)

  batched.__doc__ = (f'Batched `{fn.__name__}` on NHWC images: `key` is split into one '
                     f'key per example and the op is vmapped.\n\n{fn.__doc__}')
  batched.__name__ = f'{fn.__name__}_batch'
  batched.__qualname__ = batched.__name__
  return batched


color_jitter_batch = _over_batch(color_jitter)
random_grayscale_batch = _over_batch(random_grayscale)
gaussian_blur_batch = _over_batch(gaussian_blur)
solarize_batch = _over_batch(solarize)
random_flip_batch = _over_batch(random_flip)


# ----------------------------------------------------------------------------------------
# Recipes: plain data.
# ----------------------------------------------------------------------------------------

_TOP_KEYS = ('flip', 'color_jitter', 'grayscale', 'blur', 'solarize', 'mean', 'std')
_JITTER_KEYS = ('p', 'brightness', 'contrast', 'saturation', 'hue')
_BLUR_KEYS = ('p', 'sigma', 'kernel_frac', 'kernel_size', 'padding')
_SOLARIZE_KEYS = ('p', 'threshold')


def _as_dict(x, where: str) -> dict:
  if hasattr(x, 'to_dict'):  # ml_collections ConfigDict / FrozenConfigDict
    x = x.to_dict()
  if not isinstance(x, collections.abc.Mapping):
    raise ValueError(f'{where} must be a mapping, got {type(x).__name__}')
  return {k: v for k, v in x.items() if v is not None}


def _check_keys(d: Mapping, allowed: Sequence[str], prefix: str) -> None:
  for k in d:
    if k not in allowed:
      raise ValueError(f'unknown augmentation recipe key {prefix}{k!r}; '
                       f'allowed: {", ".join(allowed)}')


def _number(v, name: str) -> float:
  if not isinstance(v, (int, float)) or isinstance(v, bool):
    raise ValueError(f'{name} must be a number, got {v!r}')
  return float(v)


def _jitter_value(v, name: str):
  if isinstance(v, (tuple, list)):
    return tuple(_number(x, name) for x in v)
  return _number(v, name)


def validate_recipe(recipe) -> dict:
  """Checks a recipe and returns it fully expanded (idempotent).

  Raises ValueError naming the offending key for unknown keys and bad values.
  """
  r = _as_dict(recipe, 'recipe')
  _check_keys(r, _TOP_KEYS, '')
  out: dict[str, Any] = {}
  for name in ('flip', 'grayscale'):
    if name in r:
      out[name] = _check_p(r[name], name)
  if 'color_jitter' in r:
    cj = _as_dict(r['color_jitter'], 'color_jitter')
    _check_keys(cj, _JITTER_KEYS, 'color_jitter.')
    out['color_jitter'] = dict(
        p=_check_p(cj.get('p', 1.0), 'color_jitter.p'),
        **{k: _jitter_value(cj.get(k, 0.0), f'color_jitter.{k}') for k in _JITTER_KEYS[1:]})
    _enabled_jitter_ops(*(out['color_jitter'][k] for k in _JITTER_KEYS[1:]))  # ranges
  if 'blur' in r:
    b = _as_dict(r['blur'], 'blur')
    _check_keys(b, _BLUR_KEYS, 'blur.')
    sigma = b.get('sigma', (0.1, 2.0))
    if not isinstance(sigma, (tuple, list)) or len(sigma) != 2:
      raise ValueError(f'blur.sigma must be a (min, max) pair, got {sigma!r}')
    sigma = tuple(_number(s, 'blur.sigma') for s in sigma)
    if not 0.0 < sigma[0] <= sigma[1]:
      raise ValueError(f'blur.sigma must satisfy 0 < min <= max, got {sigma}')
    if 'kernel_size' in b and 'kernel_frac' in b:
      raise ValueError('blur: give kernel_size or kernel_frac, not both')
    blur = dict(p=_check_p(b.get('p', 1.0), 'blur.p'), sigma=sigma,
                padding=b.get('padding', 'reflect'))
    if blur['padding'] not in ('reflect', 'zeros'):
      raise ValueError(f"blur.padding must be 'reflect' or 'zeros', got {blur['padding']!r}")
    if 'kernel_size' in b:
      ks = b['kernel_size']
      if not isinstance(ks, int) or isinstance(ks, bool) or ks < 1 or ks % 2 != 1:
        raise ValueError(f'blur.kernel_size must be a positive odd int, got {ks!r}')
      blur['kernel_size'] = ks
    else:
      blur['kernel_frac'] = _number(b.get('kernel_frac', 0.1), 'blur.kernel_frac')
      if not 0.0 < blur['kernel_frac'] <= 1.0:
        raise ValueError(f'blur.kernel_frac must be in (0, 1], got {blur["kernel_frac"]}')
    out['blur'] = blur
  if 'solarize' in r:
    s = r['solarize']
    s = dict(p=s) if not hasattr(s, 'to_dict') and not isinstance(
        s, collections.abc.Mapping) else _as_dict(s, 'solarize')
    _check_keys(s, _SOLARIZE_KEYS, 'solarize.')
    out['solarize'] = dict(p=_check_p(s.get('p', 1.0), 'solarize.p'),
                           threshold=_number(s.get('threshold', 0.5), 'solarize.threshold'))
  if ('mean' in r) != ('std' in r):
    missing = 'std' if 'mean' in r else 'mean'
    raise ValueError(f'recipe gives {"mean" if missing == "std" else "std"} without '
                     f'{missing}; normalisation needs both')
  if 'mean' in r:
    for name in ('mean', 'std'):
      v = r[name]
      if not isinstance(v, (tuple, list)) or not v:
        raise ValueError(f'{name} must be a sequence of per-channel values, got {v!r}')
      out[name] = tuple(_number(x, name) for x in v)
    if len(out['mean']) != len(out['std']):
      raise ValueError('mean and std must have the same length')
    if any(s <= 0 for s in out['std']):
      raise ValueError(f'std must be > 0, got {out["std"]}')
  return out


_NORM = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)
_BLUR = dict(sigma=(0.1, 2.0), kernel_frac=0.1)
# BYOL Table 6 / DINO colour jitter (saturation 0.2, unlike MoCo v2's 0.4).
_BYOL_JITTER = dict(p=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)

# No `flip` in these recipes: the host pipeline already flips each crop (CropSpec.flip,
# config.data.flip), and a second on-device flip would re-enable flips that a config
# turned off (e.g. digits). Add flip=0.5 when feeding unflipped images.
RECIPES: dict[str, dict] = {
    # SimCLR (Chen et al. 2020) App. A, ImageNet: colour distortion strength s = 1.0 ->
    # (0.8s, 0.8s, 0.8s, 0.2s) with p 0.8, grayscale 0.2, blur p 0.5 with sigma in
    # [0.1, 2.0] and a kernel of 10% of the image side. (CIFAR runs drop the blur.)
    'simclr': dict(color_jitter=dict(p=0.8, brightness=0.8, contrast=0.8, saturation=0.8,
                                      hue=0.2),
                   grayscale=0.2, blur=dict(p=0.5, **_BLUR), **_NORM),
    # MoCo v1 (He et al. 2020) main_moco.py without --aug-plus, i.e. InstDis (Wu et al. 2018):
    # jitter 0.4 on every image, grayscale 0.2, no blur (the reference greys before jittering).
    'mocov1': dict(color_jitter=dict(p=1.0, brightness=0.4, contrast=0.4, saturation=0.4,
                                      hue=0.4),
                   grayscale=0.2, **_NORM),
    # MoCo v2 (Chen et al. 2020, "Improved baselines"), main_moco.py --aug-plus.
    'mocov2': dict(color_jitter=dict(p=0.8, brightness=0.4, contrast=0.4, saturation=0.4,
                                      hue=0.1),
                   grayscale=0.2, blur=dict(p=0.5, **_BLUR), **_NORM),
    # BYOL (Grill et al. 2020) Table 6: the two asymmetric views.
    'byol_view1': dict(color_jitter=_BYOL_JITTER, grayscale=0.2,
                       blur=dict(p=1.0, **_BLUR), solarize=0.0, **_NORM),
    'byol_view2': dict(color_jitter=_BYOL_JITTER, grayscale=0.2,
                       blur=dict(p=0.1, **_BLUR), solarize=0.2, **_NORM),
    # DINO (Caron et al. 2021) DataAugmentationDINO: BYOL's recipe for the two global
    # crops, blur p 0.5 for the local crops.
    'dino_global1': dict(color_jitter=_BYOL_JITTER, grayscale=0.2,
                         blur=dict(p=1.0, **_BLUR), **_NORM),
    'dino_global2': dict(color_jitter=_BYOL_JITTER, grayscale=0.2,
                         blur=dict(p=0.1, **_BLUR), solarize=0.2, **_NORM),
    'dino_local': dict(color_jitter=_BYOL_JITTER, grayscale=0.2,
                       blur=dict(p=0.5, **_BLUR), **_NORM),
    # No random op: only ImageNet normalisation (evaluation, pretext methods).
    'none': dict(**_NORM),
}


def get_recipe(name_or_dict, **overrides) -> dict:
  """A validated, fully expanded recipe from a RECIPES name or a mapping.

  Overrides replace top-level entries; a mapping override of a mapping entry is merged
  into it (`get_recipe('simclr', blur=dict(p=0.0))` keeps sigma), and None removes the
  entry (turns the op off; `mean=None, std=None` turns normalisation off).
  """
  if isinstance(name_or_dict, str):
    if name_or_dict not in RECIPES:
      raise ValueError(f'unknown augmentation recipe {name_or_dict!r}; '
                       f'known: {", ".join(RECIPES)}')
    base = RECIPES[name_or_dict]
  else:
    base = name_or_dict
  recipe = validate_recipe(base)
  for k, v in overrides.items():
    if v is None:
      recipe.pop(k, None)
    elif hasattr(v, 'to_dict') or isinstance(v, collections.abc.Mapping):
      old = recipe.get(k)
      old = old if isinstance(old, dict) else {}
      recipe[k] = {**old, **_as_dict(v, k)}
    else:
      recipe[k] = v
  return validate_recipe(recipe)


# ----------------------------------------------------------------------------------------
# The entry point used by methods.
# ----------------------------------------------------------------------------------------


def _augment_image(key, img: jax.Array, r: dict) -> jax.Array:
  # A fixed split, so switching one op on/off leaves the others' randomness unchanged.
  k_flip, k_jitter, k_gray, k_blur, k_sol = jax.random.split(key, 5)
  if 'flip' in r:
    img = random_flip(k_flip, img, r['flip'])
  if 'color_jitter' in r:
    img = color_jitter(k_jitter, img, **r['color_jitter'])
  if 'grayscale' in r:
    img = random_grayscale(k_gray, img, r['grayscale'])
  if 'blur' in r:
    b = r['blur']
    ks = b.get('kernel_size') or blur_kernel_size(img.shape[0], b['kernel_frac'])
    img = gaussian_blur(k_blur, img, b['sigma'][0], b['sigma'][1], ks, b['p'], b['padding'])
  if 'solarize' in r:
    img = solarize(k_sol, img, r['solarize']['threshold'], r['solarize']['p'])
  return img


def augment_batch(key, images: jax.Array, recipe) -> jax.Array:
  """Applies `recipe` to an NHWC batch with independent randomness per example.

  images: uint8 in [0, 255] or float in [0, 1], NHWC. Returns float32 NHWC: the
  augmented images, normalised with recipe mean/std when given (else in [0, 1]).
  recipe: a RECIPES name or a recipe mapping (validated here). It is static Python data:
  close over it under jax.jit.
  Op order: flip -> colour jitter -> grayscale -> blur -> solarize -> normalize.
  """
  r = get_recipe(recipe)
  if images.ndim != 4:
    raise ValueError(f'augment_batch expects NHWC images, got shape {images.shape}')
  if images.dtype == jnp.uint8:
    x = images.astype(jnp.float32) / 255.0
  else:
    x = images.astype(jnp.float32)
  random_ops = [k for k in r if k not in ('mean', 'std')]
  if random_ops:
    keys = jax.random.split(key, x.shape[0])
    x = jax.vmap(lambda k, im: _augment_image(k, im, r))(keys, x)
  if 'mean' in r:
    if len(r['mean']) != x.shape[-1]:
      raise ValueError(f'recipe mean/std have {len(r["mean"])} values for '
                       f'{x.shape[-1]} channels')
    x = normalize(x, r['mean'], r['std'])
  return x
