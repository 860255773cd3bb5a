"""timm parity: our ResNet / ViT exported to timm's layout give timm's features (float32)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.export import timm as timm_export
from ssl_jax.models import resnet, swin, vit


def _randomize(variables, seed=0):
  """Random values for every leaf (kernels ~ N(0, 1/fan_in), norms near identity, positive
  variances) so no parameter goes untested and activations stay O(1) through the network."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  out = []
  for (path, x), k in zip(leaves, keys):
    name = jax.tree_util.keystr(path)
    n = jax.random.normal(k, x.shape, jnp.float32)
    if name.endswith("['kernel']"):
      r = n / np.sqrt(np.prod(x.shape[:-1]))
    elif name.endswith("['scale']"):
      r = 1.0 + 0.2 * n
    elif name.endswith("['var']"):
      r = 1.0 + 0.2 * jnp.abs(n)
    elif name.endswith("['bias']") or name.endswith("['mean']"):
      r = 0.1 * n
    else:
      r = 0.3 * n
    out.append(r)
  return jax.tree_util.tree_unflatten(treedef, out)


def _images(shape, seed=1):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _timm_features(torch, model, sd, x_nhwc):
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
  model.eval()
  with torch.no_grad():
    return model(torch.from_numpy(np.transpose(x_nhwc, (0, 3, 1, 2)).copy())).numpy()


# Width 16 checks both stems' mapping; width 64 (timm's own ResNet-18) repeats it: full tier.
@pytest.mark.parametrize('cifar_stem,width', [
    pytest.param(True, 64, marks=pytest.mark.slow), pytest.param(False, 64, marks=pytest.mark.slow),
    (True, 16), (False, 16)])
def test_resnet18_parity(torch_timm, cifar_stem, width):
  torch, timm = torch_timm
  net = resnet.resnet18(width=width, cifar_stem=cifar_stem)
  x = _images((2, 32, 32, 3))
  variables = _randomize(net.init(jax.random.PRNGKey(0), x, train=False))
  ours = np.asarray(net.apply(variables, x, train=False))
  arch, kw = timm_export.timm_model_args(net)
  assert arch == 'resnet18'
  model = timm.create_model(arch, pretrained=False, **kw)
  timm_export._fix_resnet_stem(torch.nn, model, width, cifar_stem)  # pylint: disable=protected-access
  sd = timm_export.to_timm_state_dict(net, variables)
  assert set(sd) == set(model.state_dict())
  theirs = _timm_features(torch, model, sd, x)
  assert ours.shape == theirs.shape == (2, 8 * width)
  assert np.abs(ours).max() > 1e-2
  np.testing.assert_array_less(np.abs(ours - theirs).max(), 1e-4)
  back = timm_export.from_timm_state_dict(net, sd)
  for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _parity(torch_timm, net, size=16):
  """(variables, timm state dict, our features, timm's features) of ``net`` on 2 random
  ``size`` px images, with every parameter randomised and the state dict's keys checked against
  timm's."""
  torch, timm = torch_timm
  x = _images((2, size, size, 3))
  variables = _randomize(net.init(jax.random.PRNGKey(0), x))
  arch, kw = timm_export.timm_model_args(net)
  model = timm.create_model(arch, pretrained=False, **kw)
  sd = timm_export.to_timm_state_dict(net, variables)
  assert set(sd) == set(model.state_dict())
  return variables, sd, np.asarray(net.apply(variables, x)), _timm_features(torch, model, sd, x)


@pytest.mark.parametrize('prefix,pos', [(1, 'learned'), (1, 'sincos'), (0, 'learned'),
                                        (2, 'learned')])
def test_vit_parity(torch_timm, prefix, pos):
  net = vit.ViT(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                num_prefix_tokens=prefix, pos_embed=pos)
  _, _, ours, theirs = _parity(torch_timm, net)
  assert ours.shape == theirs.shape == (2, 32)
  np.testing.assert_array_less(np.abs(ours - theirs).max(), 1e-4)


@pytest.mark.parametrize('size,window', [(16, 4), (24, 5)])
def test_swin_parity(torch_timm, size, window):
  """Shifted windows, relative position bias, patch merging order: all must match timm's Swin;
  at 24 px with 5x5 windows the 12x12 and 6x6 maps are padded (to 15x15 and 10x10) as timm's."""
  net = swin.Swin(img_size=size, patch_size=2, embed_dim=8, depths=(2, 2), num_heads=(2, 4),
                  window_size=window, mlp_ratio=2.0)
  variables, sd, ours, theirs = _parity(torch_timm, net, size)
  assert 'layers.1.downsample.reduction.weight' in sd
  assert ours.shape == theirs.shape == (2, 16) and np.abs(ours).max() > 1e-2
  np.testing.assert_array_less(np.abs(ours - theirs).max(), 1e-4)
  back = timm_export.from_timm_state_dict(net, sd)
  for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_file_loads_with_create_model(torch_timm, tmp_path):
  """The documented one-liner: timm.create_model(..., pretrained_cfg_overlay=dict(file=...))."""
  torch, timm = torch_timm
  import json  # pylint: disable=g-import-not-at-top
  net = vit.ViT(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
  x = _images((3, 16, 16, 3), seed=2)
  variables = _randomize(net.init(jax.random.PRNGKey(0), x), seed=3)
  path = timm_export.export_timm(net, variables, str(tmp_path / 'timm'))
  cfg = json.load(open(os.path.join(tmp_path, 'timm', 'timm_config.json')))
  model = timm.create_model(cfg['architecture'], pretrained=True,
                            pretrained_cfg_overlay=dict(file=path), **cfg['model_args'])
  model.eval()
  with torch.no_grad():
    theirs = model(torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy())).numpy()
  np.testing.assert_array_less(np.abs(np.asarray(net.apply(variables, x)) - theirs).max(), 1e-4)


@pytest.mark.parametrize('arch', ['resnet18_cifar', 'resnet50_narrow', 'vit'])
def test_timm_model_loads_an_export_from_a_workdir(torch_timm, tmp_path, arch):
  """ssl_jax.export.timm_model(workdir): architecture, CIFAR stem and weights from the export."""
  torch, _ = torch_timm
  import ssl_jax.export  # pylint: disable=g-import-not-at-top
  if arch == 'vit':
    net, shape = vit.ViT(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2), 16
    variables = _randomize(net.init(jax.random.PRNGKey(0), _images((1, 16, 16, 3))), seed=4)
    ours_fn = lambda x: net.apply(variables, x)
  else:
    make = resnet.resnet50 if arch == 'resnet50_narrow' else resnet.resnet18
    net, shape = make(width=16 if arch == 'resnet18_cifar' else 8, cifar_stem=arch != 'resnet50_narrow'), 32
    variables = _randomize(net.init(jax.random.PRNGKey(0), _images((1, 32, 32, 3)), train=False))
    ours_fn = lambda x: net.apply(variables, x, train=False)
  color = 'gray' if arch == 'vit' else 'rgb'   # an input colour timm's transforms lack: noted
  timm_export.export_timm(net, variables, str(tmp_path / 'export' / 'timm'),
                          dict(color=color, mean=(0.5,) * 3, std=(0.25,) * 3))
  model = ssl_jax.export.timm_model(str(tmp_path))
  # timm.data.resolve_data_config(model=model) reads the export's normalisation from here.
  assert model.pretrained_cfg['mean'] == (0.5,) * 3 and model.pretrained_cfg['std'] == (0.25,) * 3
  assert model.pretrained_cfg.get('ssl_jax_input_color', 'rgb') == color
  x = _images((2, shape, shape, 3), seed=5)
  with torch.no_grad():
    theirs = model(torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy())).numpy()
  np.testing.assert_array_less(np.abs(np.asarray(ours_fn(x)) - theirs).max(), 1e-4)


def test_timm_model_without_an_export_names_the_fix(tmp_path):
  import ssl_jax.export  # pylint: disable=g-import-not-at-top
  with pytest.raises(FileNotFoundError, match='run --mode=export first'):
    ssl_jax.export.timm_model(str(tmp_path))
