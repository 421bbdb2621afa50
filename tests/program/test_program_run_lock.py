"""The run-directory lock against other processes holding a plain flock."""

import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest

from tff_feddst.program import paths
from tff_feddst.program import run_lock

# Another process, written without our code: flock, then "pid host".
HOLDER = textwrap.dedent("""
    import fcntl, os, socket, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      print('refused', flush=True)
      sys.exit(0)
    os.ftruncate(fd, 0)
    os.write(fd, f'{os.getpid()} {socket.gethostname()}\\n'.encode())
    print('locked', flush=True)
    time.sleep(600)
""")


def _holder(root):
  """Starts a holder of root's lock; returns it and what it printed."""
  proc = subprocess.Popen(
      [sys.executable, '-c', HOLDER, str(paths.RunPaths.of(root).lock)],
      stdout=subprocess.PIPE, text=True)
  return proc, proc.stdout.readline().strip()


def test_held_directory_is_refused_naming_the_holder(tmp_path):
  root = tmp_path / 'run'
  root.mkdir()
  proc, said = _holder(root)
  try:
    assert said == 'locked'
    expected = (f'{root} is in use by process {proc.pid} on host '
                f'{socket.gethostname()}')
    with pytest.raises(run_lock.RunDirectoryInUseError,
                       match=re.escape(expected)):
      with run_lock.hold_run_directory(root):
        pytest.fail('entered a directory another process holds')
  finally:
    proc.kill()
    proc.wait()
  # The OS released the dead holder's lock: no stale lock.
  with run_lock.hold_run_directory(root):
    assert paths.RunPaths.of(root).lock.read_text() == (
        f'{os.getpid()} {socket.gethostname()}\n')


def test_lock_is_held_for_the_block_and_reentrant(tmp_path):
  root = tmp_path / 'new' / 'run'  # Created by the lock.
  with run_lock.hold_run_directory(root):
    (root / 'hparams.json').write_text('{}')  # A run that wrote something.
    with run_lock.hold_run_directory(str(root)):  # Same process: re-entrant.
      pass
    proc, said = _holder(root)  # Still held after the inner block.
    proc.wait()
    assert said == 'refused'
  proc, said = _holder(root)
  try:
    assert said == 'locked'
  finally:
    proc.kill()
    proc.wait()


def test_a_run_that_wrote_nothing_leaves_no_directory(tmp_path):
  """E.g. the data failed to load: no directory holding only `.lock`."""
  new = tmp_path / 'new' / 'run'
  with pytest.raises(RuntimeError, match='data did not load'):
    with run_lock.hold_run_directory(new):
      raise RuntimeError('data did not load')
  assert not new.exists()
  # A directory that existed before, or got files, stays.
  existing = tmp_path / 'existing'
  existing.mkdir()
  with run_lock.hold_run_directory(existing):
    pass
  assert existing.is_dir()
  with run_lock.hold_run_directory(new):
    (new / 'hparams.json').write_text('{}')
  assert sorted(p.name for p in new.iterdir()) == ['.lock', 'hparams.json']
