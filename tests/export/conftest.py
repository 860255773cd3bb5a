"""torch / timm for the export tests (test-only dependencies, requirements-test.txt).

PyPI's torchvision wheels are CUDA builds whose C++ ops cannot load next to the CPU-only torch
wheel; timm imports torchvision only for Python-level helpers, but torchvision's import registers
fake kernels for ``torchvision::nms``/``qnms`` and fails when those ops were never defined. We
define the two op schemas (no kernels) before timm is imported so torchvision imports cleanly;
no test calls them.
"""
import pytest


def _import_timm():
  torch = pytest.importorskip('torch')
  try:
    import timm  # pylint: disable=g-import-not-at-top
    return torch, timm
  except (RuntimeError, ImportError):
    import sys  # pylint: disable=g-import-not-at-top
    for name in [m for m in sys.modules if m.split('.')[0] in ('timm', 'torchvision')]:
      del sys.modules[name]
  lib = torch.library.Library('torchvision', 'DEF')  # pylint: disable=unused-variable
  lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
  lib.define('qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor')
  _import_timm.lib = lib  # keep the definitions alive
  timm = pytest.importorskip('timm')
  return torch, timm


@pytest.fixture(scope='session')
def torch_timm():
  return _import_timm()
