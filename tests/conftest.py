"""Every test session runs TFF on a worker owned by `tff_feddst.runtime`."""

import os
import pathlib
import sqlite3
import subprocess

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tff_feddst import runtime  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope='session', autouse=True)
def tff_runtime():
  rt = runtime.ensure_runtime()
  yield rt
  runtime.shutdown()


def _write_fake_emnist(path, clients):
  """A tiny database in TFF's EMNIST layout.

  `clients`: {(client id, split name): [(pixels (28, 28), label), ...]}.
  """
  with sqlite3.connect(path) as con:
    con.execute('CREATE TABLE examples (split_name TEXT, client_id TEXT, '
                'serialized_example_proto BLOB)')
    con.execute('CREATE TABLE client_metadata (client_id TEXT, split_name TEXT, '
                'num_examples INTEGER)')
    for (cid, split), examples in clients.items():
      for pixels, label in examples:
        proto = tf.train.Example(features=tf.train.Features(feature={
            'pixels': tf.train.Feature(float_list=tf.train.FloatList(
                value=pixels.ravel())),
            'label': tf.train.Feature(int64_list=tf.train.Int64List(
                value=[label])),
        })).SerializeToString()
        con.execute('INSERT INTO examples VALUES (?, ?, ?)', (split, cid, proto))
      con.execute('INSERT INTO client_metadata VALUES (?, ?, ?)',
                  (cid, split, len(examples)))


@pytest.fixture
def write_fake_emnist():
  return _write_fake_emnist


# Files whose tests start launcher, benchmark or worker processes, longest
# first. xdist (`--dist loadfile --no-loadscope-reorder`) hands out files in
# collection order; starting with the long ones lets the two workers finish
# together instead of one running a 3-minute launcher file alone at the end.
_LONGEST_FIRST = (
    'tests/launchers/test_launchers_train.py',
    'tests/benchmarks/test_performance_smoke.py',
    'tests/launchers/test_launchers_workers.py',
    'tests/test_runtime.py',
    'tests/launchers/',
)


def _schedule_rank(item) -> int:
  path = item.nodeid.split('::')[0]
  path = path if path.startswith('tests/') else f'tests/{path}'
  for rank, prefix in enumerate(_LONGEST_FIRST):
    if path.startswith(prefix):
      return rank
  return len(_LONGEST_FIRST)


def pytest_collection_modifyitems(items):
  items.sort(key=_schedule_rank)  # Stable: files keep their order otherwise.


# A test writes only under its tmp_path: the repository's files (tracked or
# not ignored) must be the same after the session as before it.
_REPO = pathlib.Path(__file__).resolve().parents[1]


def _repository_files_state() -> str | None:
  """git's view of the uncommitted changes and untracked files (None
  outside a git checkout)."""
  try:
    parts = [subprocess.run(args, cwd=_REPO, capture_output=True, text=True,
                            check=True, timeout=60).stdout
             for args in (['git', 'status', '--porcelain',
                           '--untracked-files=all'], ['git', 'diff', 'HEAD'])]
  except (OSError, subprocess.SubprocessError):
    return None
  return '\n'.join(parts)


def pytest_sessionstart(session):
  if not hasattr(session.config, 'workerinput'):  # The controller only.
    session.config.stash[_REPO_STATE] = _repository_files_state()


def pytest_sessionfinish(session):
  before = session.config.stash.get(_REPO_STATE, None)
  if before is None:
    return
  after = _repository_files_state()
  if after != before:
    changed = sorted(set(after.splitlines()) - set(before.splitlines()))
    session.config.get_terminal_writer().line(
        'FAILED: the tests changed files of the repository (a test must '
        'write under its tmp_path); new lines of `git status`/`git diff`:\n'
        + '\n'.join(changed[:20]), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


_REPO_STATE = pytest.StashKey[str | None]()
