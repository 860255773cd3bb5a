"""BEiT's visual tokenizer, trained in this library as a method of its own: a VQ-VAE.

van den Oord et al., "Neural Discrete Representation Learning", NeurIPS 2017. A conv encoder maps
an image to an (H/s, W/s) grid of vectors, each replaced by its nearest codebook entry; a conv
decoder reconstructs the image from the codes; the loss (``losses.vq_vae_loss``) is
reconstruction + codebook + beta * commitment, with the straight-through estimator carrying the
reconstruction gradient past the non-differentiable lookup. BEiT (Bao et al. 2022) used DALL-E's
dVAE instead; any tokenizer that maps an image to one code per ViT patch fits, so here
``downsample`` = the ViT's patch size gives one code per patch.

Train it like any method, then name its workdir in the BEiT config::

    python -m ssl_jax.main --config=configs/vqvae.py:builtin --workdir=/tmp/vqvae_builtin
    python -m ssl_jax.main --config=configs/beit.py:builtin --workdir=/tmp/beit_builtin \
        --config.method.tokenizer_workdir=/tmp/vqvae_builtin

Config (``config.method``): num_codes, code_dim, hidden, num_res, downsample (a power of two),
l2_codes, beta. Eval features (kNN) are the flattened quantised code vectors of the image.
"""
from __future__ import annotations

import dataclasses

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax import losses, paths
from ssl_jax.methods.base import Method
from ssl_jax.models.decoders import VQVAE

TOKENIZER_FIELDS = ('num_codes', 'code_dim', 'hidden', 'num_res', 'downsample', 'l2_codes')


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizerHparams:
  """The VQ-VAE's sizes (:data:`TOKENIZER_FIELDS`): ``config.method`` of a vqvae run and
  ``config.method.tokenizer`` of a BEiT run, which rebuilds the same module."""
  num_codes: int
  code_dim: int
  hidden: int
  num_res: int
  downsample: int   # a power of two: BEiT's patch size
  l2_codes: bool


# Tokenizer sizes per config variant; configs/vqvae.py trains with these and configs/beit.py
# rebuilds the same module to load the checkpoint. ``downsample`` = the BEiT ViT's patch size.
TOKENIZERS = {
    'builtin': dict(num_codes=128, code_dim=16, hidden=32, num_res=1, downsample=4,
                    l2_codes=True),
    'cifar10': dict(num_codes=1024, code_dim=64, hidden=128, num_res=2, downsample=4,
                    l2_codes=True),
    # BEiT's vocabulary size (8192) at one code per 16x16 patch.
    'imagenet': dict(num_codes=8192, code_dim=32, hidden=256, num_res=2, downsample=16,
                     l2_codes=True),
}


def tokenizer_config(variant: str, **overrides) -> ml_collections.ConfigDict:
  """The VQ-VAE hyper-parameters of ``variant`` (see :data:`TOKENIZERS`), with overrides."""
  if variant not in TOKENIZERS:
    raise ValueError(f'no tokenizer sizes for variant {variant!r}; choose one of '
                     f'{sorted(TOKENIZERS)}')
  return ml_collections.ConfigDict({**TOKENIZERS[variant], **overrides})


def build_vqvae(cfg) -> VQVAE:
  """The VQVAE module from a config section holding :data:`TOKENIZER_FIELDS`."""
  num_down = int(round(math.log2(cfg.downsample)))
  if 2 ** num_down != cfg.downsample:
    raise ValueError(f'tokenizer downsample={cfg.downsample} must be a power of two')
  return VQVAE(num_codes=cfg.num_codes, code_dim=cfg.code_dim, hidden=cfg.hidden,
               num_down=num_down, num_res=cfg.num_res, l2_codes=cfg.l2_codes)


def load_tokenizer_params(workdir: str):
  """The VQ-VAE params of the latest checkpoint in ``workdir`` (a ``vqvae`` run), as numpy.

  Raises FileNotFoundError / ValueError with the command to run when there is none.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  how = ('train one first: python -m ssl_jax.main --config=configs/vqvae.py:<variant> '
         f'--workdir={workdir or "DIR"}, then set config.method.tokenizer_workdir to that DIR')
  if not workdir:
    raise ValueError(f'config.method.tokenizer_workdir is empty: BEiT needs a trained tokenizer; '
                     f'{how} (tests may set config.method.tokenizer_random_init=True)')
  directory = paths.as_path(workdir) / 'checkpoints'   # gs://... stays a URL
  if not directory.is_dir():
    raise FileNotFoundError(f'config.method.tokenizer_workdir={workdir!r} has no checkpoints/; '
                            f'{how}')
  mgr = ocp.CheckpointManager(directory, item_names=('state', 'meta'))
  try:
    step = mgr.latest_step()
    if step is None:
      raise FileNotFoundError(f'config.method.tokenizer_workdir={workdir!r} has no finished '
                              f'checkpoint; {how}')
    meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    if meta.get('method') != 'vqvae':
      raise ValueError(f'config.method.tokenizer_workdir={workdir!r} holds a '
                       f'{meta.get("method")!r} run, not a vqvae tokenizer; {how}')
    state = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  finally:
    mgr.close()
  return jax.tree_util.tree_map(np.asarray, state['params']['vqvae'])


def check_tokenizer_params(params, module: VQVAE, image_size: int, where: str):
  """Raises ValueError naming the fields when ``params`` do not fit ``module``."""
  expected = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                                jnp.zeros((1, image_size, image_size, 3))))
  want = jax.tree_util.tree_map(lambda x: tuple(x.shape), expected['params'])
  got = jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), params)
  if want != got:
    fields = ', '.join(TOKENIZER_FIELDS)
    raise ValueError(f'the tokenizer checkpoint does not match {where} ({fields} '
                     f'must equal those of the vqvae config it was trained with): codebook '
                     f'{got.get("codebook")} vs config {want.get("codebook")}')


class VQTokenizer(Method):
  """VQ-VAE training as a method: one crop, reconstruction through the codebook."""

  num_views = 1
  has_encoder = False        # a tokenizer: its codes feed BEiT (method.tokenizer_workdir)
  features_from_encoder = False

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Hparams(Method.Hparams, TokenizerHparams):
    beta: float

  def __init__(self, config):
    super().__init__(config)
    self.vqvae = build_vqvae(self.hp)
    self.beta = self.hp.beta

  def init(self, rng, batch):
    x = jnp.zeros((2,) + batch['view0'].shape[1:3] + (3,), jnp.float32)
    return {'vqvae': self.vqvae.init(rng, x)['params']}, {}

  def views(self, batch, rng):
    return {'image': self.normalize(batch['view0'])}

  def loss(self, params, state, views, rng):
    out = self.vqvae.apply({'params': params['vqvae']}, views['image'])
    loss, parts = losses.vq_vae_loss(views['image'], out['x_rec'], out['z_e'], out['z_q'],
                                     self.beta)
    return loss, ({**parts, 'code_perplexity': code_perplexity(out['indices'],
                                                              self.vqvae.num_codes)},
                  state.buffers)

  def encoder_variables(self, params, buffers):
    raise ValueError('the VQ tokenizer (method.name=vqvae) trains no image encoder to export or '
                     'fine-tune; configs/beit.py reads its checkpoint via method.tokenizer_workdir')

  def features(self, params, buffers, images_uint8):
    """Flattened quantised code vectors (B, h * w * code_dim)."""
    x = self.normalize(images_uint8)
    z = self.vqvae.apply({'params': params['vqvae']}, x,
                         method=lambda m, x: m.quantize(m.encoder(x))[1])
    return z.reshape(z.shape[0], -1).astype(jnp.float32)

  def reconstruct(self, params, buffers, images_uint8, rng):
    """Original / the code-index map (as grey levels) / the decoding of the codes."""
    from ssl_jax.data import augment  # pylint: disable=g-import-not-at-top
    recipe = augment.get_recipe('none')
    den = lambda x: jnp.clip(x * jnp.asarray(recipe['std']) + jnp.asarray(recipe['mean']), 0, 1)
    x = self.normalize(images_uint8)
    out = self.vqvae.apply({'params': params['vqvae']}, x)
    idx = out['indices'].astype(jnp.float32) / max(self.vqvae.num_codes - 1, 1)
    codes = jax.image.resize(idx[..., None], x.shape[:3] + (1,), 'nearest')
    return {'original': den(x), 'masked': jnp.repeat(codes, 3, -1),
            'reconstruction': den(out['x_rec'])}


def code_perplexity(indices, num_codes: int):
  """exp(entropy) of the batch's code histogram: how many codes are effectively in use."""
  counts = jnp.bincount(indices.reshape(-1), length=num_codes).astype(jnp.float32)
  p = counts / jnp.maximum(counts.sum(), 1.0)
  return jnp.exp(-jnp.sum(p * jnp.log(jnp.maximum(p, 1e-10))))
