"""train.epochs / train.budget_minutes: the rules, the "exactly one" error, and one tiny run sized
by a time budget that records its steps in the saved config and logs the label-free monitors."""
import json
import os

import pytest

from configs import simclr
from ssl_jax import config as config_lib
from ssl_jax.train import loop
from tests import helpers


def test_steps_for_epochs_rounds_up():
  assert config_lib.steps_for_epochs(1, 4000, 256) == 16      # 15.6 -> 16
  assert config_lib.steps_for_epochs(40, 4000, 256) == 625
  assert config_lib.steps_for_epochs(0.001, 100, 256) == 1


def test_steps_for_budget_rule():
  # 10 min, 0.5 s/step, 30 s measuring, 20 s compile: (600 - 50) * 0.9 / 0.5 = 990.
  assert config_lib.steps_for_budget(10, 0.5, 30, 20) == 990
  assert config_lib.steps_for_budget(0.01, 5.0, 30) == 1      # never below one step


def _train(**fields):
  t = config_lib.base_config().train
  t.update(fields)
  return t


def test_exactly_one_of_steps_and_epochs():
  both = r'config.train.epochs=40 and config.train.steps=300 are both set.*--config.train.steps=0'
  with pytest.raises(ValueError, match=both):
    config_lib.check_run_length(_train(steps=300, epochs=40.0))
  with pytest.raises(ValueError, match=r'config.train.steps: is 0 .*--config.train.epochs='):
    config_lib.check_run_length(_train(steps=0))
  for ok in (dict(steps=300), dict(steps=0, epochs=4.0), dict(steps=0, budget_minutes=5.0),
             dict(steps=300, budget_minutes=5.0), dict(steps=625, epochs=40.0, steps_from='epochs')):
    config_lib.check_run_length(_train(**ok))
  with pytest.raises(ValueError, match='train.epochs'):
    config_lib.check_run_length(_train(steps=0, epochs=-1.0))


def test_epochs_resolve_from_the_source_size(tmp_path):
  c = helpers.tiny(simclr.get_config('builtin'), batch_size=16)
  c.train.steps, c.train.epochs, c.optim.warmup_steps = 0, 0.1, 20
  r = loop.resolve_run_length(c, str(tmp_path))
  assert r.train.steps == 25 and r.train.steps_from == 'epochs'   # 0.1 x 4000 / 16
  assert r.optim.warmup_steps == 2                                # cut to a tenth of the run
  assert c.train.steps == 0                                       # the input is not modified
  config_lib.check_run_length(r.train)


@pytest.fixture(scope='module')
def budget_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('budget'))
  c = helpers.tiny(simclr.get_config('builtin'), batch_size=16)
  c.train.steps, c.train.epochs, c.train.budget_minutes = 0, 1.0, 0.01  # 0.6 s: the cap binds
  c.train.monitor_every = 1
  c.train.checkpoint_every = 100
  summary = loop.train_and_evaluate(c, workdir)
  return workdir, summary


def test_budget_caps_the_run_and_is_recorded(budget_run):
  workdir, summary = budget_run
  saved = json.load(open(os.path.join(workdir, 'config.json')))['train']
  assert saved['steps_from'] == 'budget_minutes' and saved['budget_minutes'] == 0.01
  assert saved['steps'] == summary['steps'] == 1 < 250            # 1 epoch would be 250 steps


def test_monitors_reach_the_summary(budget_run):
  _, summary = budget_run
  assert 1.0 <= summary['rankme'] <= 128
  assert 0 < summary['embedding_std_ratio'] <= 1.5
  assert 0 <= summary['alignment'] <= 4 and -4 <= summary['uniformity'] <= 0
