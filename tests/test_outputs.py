"""Outputs that survive retries (issue 30 item 5): atomic JSON, history.json across resumes, the
summary of a run that was already complete (export's repeatability: tests/eval/test_run.py)."""
import json
import os

import pytest

from configs import simclr
from ssl_jax import paths
from ssl_jax.train import loop, preemption
from tests import helpers


def test_write_json_atomic_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
  target = tmp_path / 'out' / 'summary.json'
  paths.write_json_atomic(target, {'step': 1})
  assert json.loads(target.read_text()) == {'step': 1}

  def die(fd):   # the process dies after part of the new content reached the disk
    raise OSError('killed mid-write')
  monkeypatch.setattr(os, 'fsync', die)
  with pytest.raises(OSError, match='killed mid-write'):
    paths.write_json_atomic(target, {'step': 2, 'padding': 'x' * 100_000})
  assert json.loads(target.read_text()) == {'step': 1}      # the old file, whole
  assert os.listdir(target.parent) == ['summary.json']       # and no temporary left behind
  monkeypatch.undo()
  paths.write_json_atomic(target, {'step': 3})
  assert paths.read_json(target) == {'step': 3}
  assert paths.read_json(tmp_path / 'missing.json', default=[]) == []


def test_as_path_keeps_urls(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(paths.as_path('gs://bucket/run1')) == 'gs://bucket/run1'
  assert str(paths.as_path('gs://bucket/run1') / 'checkpoints') == 'gs://bucket/run1/checkpoints'
  assert str(paths.as_path('run1')) == str(tmp_path / 'run1')
  assert not os.path.exists(tmp_path / 'gs:')


def test_history_spans_resumes_and_a_complete_run_keeps_its_summary(tmp_path, monkeypatch):
  c = helpers.tiny(simclr.get_config('builtin'), steps=4)
  c.train.checkpoint_every = 2
  c.method.proj_hidden_dim, c.method.proj_dim = 16, 8
  workdir, mesh = str(tmp_path / 'run'), helpers.mesh(1)
  written = []
  real_write = paths.write_json_atomic
  monkeypatch.setattr(paths, 'write_json_atomic',
                      lambda p, *a, **k: written.append(os.path.basename(str(p))) or
                      real_write(p, *a, **k))

  # Session 1 is stopped (as by SIGTERM) after step 2: checkpoint, history so far.
  with monkeypatch.context() as m:
    m.setattr(preemption.PreemptionWatcher, 'should_stop', lambda self, done: done == 2)
    first = loop.train_and_evaluate(c, workdir, mesh)
  assert first['preempted'] and first['stopped_at_step'] == 2
  assert [h['step'] for h in paths.read_json(tmp_path / 'run' / 'history.json')] == [1, 2]

  # Session 2 resumes at 2 and finishes: the history holds both sessions' steps.
  second = loop.train_and_evaluate(c, workdir, mesh)
  assert second['resumed_from_step'] == 2 and second['steps_run'] == 2
  history = paths.read_json(tmp_path / 'run' / 'history.json')
  assert [h['step'] for h in history if 'loss' in h] == [1, 2, 3, 4]
  assert second['final_loss'] == history[-1]['loss']

  # Session 3: the run was already complete; its summary still reports the final loss.
  third = loop.train_and_evaluate(c, workdir, mesh)
  assert third['resumed_from_step'] == 4 and third['steps_run'] == 0
  assert third['final_loss'] == second['final_loss']
  assert paths.read_json(tmp_path / 'run' / 'history.json') == history
  assert paths.read_json(tmp_path / 'run' / 'summary.json')['final_loss'] == second['final_loss']
  assert {'summary.json', 'history.json'} <= set(written)   # every JSON output written atomically
