"""notebooks/quickstart.ipynb runs top to bottom (tiny model via SSL_JAX_NOTEBOOK_SMOKE=1)."""
import os

import pytest

from tests import helpers

nbclient = pytest.importorskip('nbclient')
nbformat = pytest.importorskip('nbformat')
pytest.importorskip('ipykernel')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_executes(monkeypatch):
  monkeypatch.setenv('SSL_JAX_NOTEBOOK_SMOKE', '1')
  monkeypatch.setenv('XLA_FLAGS', helpers.xla_flags(1))
  monkeypatch.setenv('PYTHONPATH', ROOT)
  nb = nbformat.read(os.path.join(ROOT, 'notebooks', 'quickstart.ipynb'), as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': ROOT}})
  client.execute()
  outputs = '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                      for o in c.get('outputs', []))
  assert 'kNN top-1: pretrained' in outputs
  assert 'features (8, ' in outputs
