"""The import graph follows the layers of docs/architecture.md (issue 29 item 4).

Every ``ssl_jax/**/*.py`` is parsed with ``ast`` (no imports run, so this test is fast and sees
imports inside functions too) and each import becomes an edge between *nodes*: a top-level module
or folder of ``ssl_jax`` (``losses``, ``data``, ``optim``, ...), except that every method family
``methods/<family>`` is its own node, and ``train/loop.py`` (with ``train/memory.py``, which drives
it) is the node ``train/loop``: the training client sits above eval/ (it runs kNN and the online
probe), while eval/ sits above the rest of train/ (sharding, checkpoints, the run assembly).

Checked: (a) no cycles between nodes, (b) no method family imports another family (shared pieces
move down to ``methods/*.py``, ``data/``, ``losses/``, ``optim.py``), (c) every edge points down
the layer order of ``LAYERS`` (so models/, losses/, data/ never import methods/, train/, eval/,
export/; methods/ never imports train/, eval/, export/; eval/, export/, viz/ never import
train/loop.py). Edges the code still has are listed in ``KNOWN_EXCEPTIONS`` with the reason; an
entry that the code no longer needs fails the test, so the list only shrinks.
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / 'ssl_jax'
FAMILIES = ('contrastive', 'distillation', 'masked', 'pretext', 'hybrid', 'jepa')
TRAIN_CLIENTS = ('loop', 'memory')

# Lowest layer first; a node may import nodes of its own or lower layers (docs/architecture.md).
LAYERS = (
    ('paths',),
    ('config',),
    ('runtime',),  # process setup; checks config.model fields, so above config.py
    ('data', 'losses'),
    ('models',),
    ('optim',),
    ('methods',),  # base.py, common.py, teacher.py, masked_image.py, the registry (by string)
    tuple(f'methods/{f}' for f in FAMILIES),
    ('train',),  # step, state, sharding, checkpoint, preemption, the run assembly
    ('eval', 'export', 'viz', 'infomin'),
    ('train/loop',),
    # Entry points: 'ssl_jax' is the package's __init__ (the API); 'catalog' is --list's listing.
    ('main', 'launch', 'ssl_jax', 'catalog'),
)
RANK = {node: rank for rank, nodes in enumerate(LAYERS) for node in nodes}

# (importing module, imported node) -> why it is still allowed. Remove an entry when its import
# goes; the test fails on entries that no longer match any import.
KNOWN_EXCEPTIONS = {
    # config.validate looks names up in the method registry (methods/__init__.py: strings, no
    # method module is imported) and in models/; neither imports config, so no cycle.
    ('ssl_jax.config', 'methods'): 'config.validate looks the method name up in the registry',
    ('ssl_jax.config', 'models'): 'config.validate asks models/ for the backbone names',
}


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
  parts = list(path.relative_to(root.parent).with_suffix('').parts)
  if parts[-1] == '__init__':
    parts.pop()
  return '.'.join(parts)


def is_module(name: str, root: pathlib.Path = ROOT) -> bool:
  base = root.parent / pathlib.Path(*name.split('.'))
  return base.with_suffix('.py').exists() or (base / '__init__.py').exists()


def node_of(module: str) -> str:
  parts = module.split('.')
  if len(parts) == 1:
    return 'ssl_jax'
  if parts[1] == 'methods' and len(parts) > 2 and parts[2] in FAMILIES:
    return f'methods/{parts[2]}'
  if parts[1] == 'train' and len(parts) > 2 and parts[2] in TRAIN_CLIENTS:
    return 'train/loop'
  return parts[1]


def imported_modules(path: pathlib.Path, root: pathlib.Path = ROOT):
  """Every ssl_jax module ``path`` imports (at any depth of the file), resolved to a module."""
  this = module_name(path, root)
  package = this if path.name == '__init__.py' else this.rpartition('.')[0]
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(anchor + ([base] if base else []))
      names = [f'{base}.{a.name}' if is_module(f'{base}.{a.name}', root) else base
               for a in node.names]
    else:
      continue
    for name in names:
      if name == 'ssl_jax' or name.startswith('ssl_jax.'):
        yield name


def import_edges(root: pathlib.Path = ROOT):
  """{(importing module, imported node)} over every file of ssl_jax/, own-node edges dropped."""
  edges = set()
  for path in sorted(root.rglob('*.py')):
    src = module_name(path, root)
    for target in imported_modules(path, root):
      if node_of(target) != node_of(src):
        edges.add((src, node_of(target)))
  return edges


def node_graph(edges):
  graph = {}
  for src, dst in edges:
    if (src, dst) not in KNOWN_EXCEPTIONS:
      graph.setdefault(node_of(src), set()).add(dst)
  return graph


def cycles(graph):
  """Strongly connected components with more than one node (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = set()
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.add(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
    if v not in index:
      visit(v)
  return out


def test_every_node_has_a_layer():
  nodes = {node_of(module_name(p)) for p in ROOT.rglob('*.py')}
  unknown = sorted(nodes - set(RANK))
  assert not unknown, (f'{unknown} are not in tests/test_layering.py LAYERS: add each to the '
                       'layer of docs/architecture.md it belongs to')


def test_no_cycles_between_folders():
  found = cycles(node_graph(import_edges()))
  assert not found, f'import cycles between folders: {found}; move the shared piece down a layer'


def test_no_method_family_imports_another():
  bad = sorted((src, dst) for src, dst in import_edges()
               if node_of(src).startswith('methods/') and dst.startswith('methods/')
               and (src, dst) not in KNOWN_EXCEPTIONS)
  assert not bad, (f'method files import another family: {bad}; move the shared piece to '
                   'methods/*.py, data/, losses/ or optim.py')


def test_imports_point_down_the_layers():
  bad = sorted((src, dst) for src, dst in import_edges()
               if dst in RANK and node_of(src) in RANK and RANK[dst] > RANK[node_of(src)]
               and (src, dst) not in KNOWN_EXCEPTIONS)
  assert not bad, (f'imports against the layer order of docs/architecture.md: {bad} '
                   '(importer, imported layer); move the shared piece down a layer')


def test_known_exceptions_are_still_needed():
  stale = sorted(set(KNOWN_EXCEPTIONS) - import_edges())
  assert not stale, (f'{stale} no longer import across the layers: delete them from '
                     'KNOWN_EXCEPTIONS in tests/test_layering.py')


def test_the_checker_sees_a_planted_violation(tmp_path):
  """The graph builder itself: a lazy family-to-family import, a relative and an upward import,
  and the cycle they close, are all found."""
  pkg = tmp_path / 'ssl_jax'
  for d in ('methods/hybrid', 'methods/masked', 'losses'):
    (pkg / d).mkdir(parents=True)
  for f in ('__init__.py', 'methods/__init__.py', 'methods/hybrid/__init__.py',
            'methods/masked/__init__.py', 'losses/__init__.py'):
    (pkg / f).write_text('')
  (pkg / 'methods/masked/mae.py').write_text('import ssl_jax.losses.bad\n')
  (pkg / 'methods/hybrid/planted.py').write_text(
      'def f():\n  from ssl_jax.methods.masked.mae import MAE\n')
  (pkg / 'losses/bad.py').write_text(
      'from ssl_jax import methods\nfrom ..methods.hybrid import planted\n')
  edges = import_edges(pkg)
  assert ('ssl_jax.methods.hybrid.planted', 'methods/masked') in edges
  assert ('ssl_jax.losses.bad', 'methods') in edges
  assert ('ssl_jax.losses.bad', 'methods/hybrid') in edges
  assert cycles(node_graph(edges)) == [['losses', 'methods/hybrid', 'methods/masked']]
