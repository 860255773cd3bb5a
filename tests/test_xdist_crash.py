"""The suite's xdist scheduler (tests/conftest.py) survives a worker that dies mid-test: that test
is reported failed once, the rest of its file and of the suite still run, and the run ends (a
segfaulting XLA:CPU compile once left pytest-xdist 3.8's loadfile waiting until CI's limit)."""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CRASHING = '''import os, signal
def test_before(): pass
def test_dies(): os.kill(os.getpid(), signal.SIGSEGV)
def test_after(): pass
'''


def test_a_crashed_worker_fails_its_test_and_the_run_finishes(tmp_path):
  tests = tmp_path / 'tests'
  tests.mkdir()
  (tests / '__init__.py').write_text('')
  shutil.copy(os.path.join(HERE, 'conftest.py'), tests / 'conftest.py')
  (tests / 'test_crash.py').write_text(CRASHING)
  for i in range(4):
    (tests / f'test_ok{i}.py').write_text('def test_one(): pass\ndef test_two(): pass\n')
  env = dict(os.environ, PYTHONFAULTHANDLER='')
  out = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rA', '-n', '2', '--dist',
                        'loadfile', '-p', 'no:cacheprovider', 'tests'], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
  log = out.stdout + out.stderr
  assert out.returncode == 1, log[-3000:]
  assert 'FAILED tests/test_crash.py::test_dies' in log, log[-3000:]
  assert 'PASSED tests/test_crash.py::test_after' in log, log[-3000:]
  assert '1 failed, 10 passed' in log, log[-3000:]
