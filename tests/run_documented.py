"""Runs one ``python -m ssl_jax.main ...`` command line for tests/test_docs.py, in this process,
optionally with TFDS served by ``tfds.testing.mock_data`` (no download, no prepared dataset)::

    python tests/run_documented.py [--mock_tfds] -- --config=... --workdir=... [--config.X=Y ...]
"""
import sys


def main():
  args = sys.argv[1:]
  mock = args[0] == '--mock_tfds'
  args = args[args.index('--') + 1:]
  from absl import app  # pylint: disable=g-import-not-at-top
  from ssl_jax import main as main_lib, runtime  # pylint: disable=g-import-not-at-top
  sys.argv = ['ssl_jax.main'] + args
  if not mock:
    app.run(main_lib.main, flags_parser=runtime.parse_flags)   # exits
    return
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=24):
    app.run(main_lib.main, flags_parser=runtime.parse_flags)


if __name__ == '__main__':
  main()
