"""Two train.py runs on one root dir: one is refused at once, one finishes."""

import socket
import subprocess
import sys
import time

from launcher_helpers import (REPO, TIMEOUT, TINY_FLAGS, TRAIN, child_env,
                              read_rows, without_wall_clock)


def test_second_run_on_a_root_dir_is_refused(launcher_runs, tmp_path):
  root = tmp_path / 'run'
  command = [sys.executable, str(TRAIN), *TINY_FLAGS, f'--root_dir={root}']
  # Started together: whichever takes the lock first is "the first".
  runs = [subprocess.Popen(command, cwd=REPO, env=child_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True) for _ in range(2)]
  try:
    deadline = time.monotonic() + TIMEOUT
    while all(r.poll() is None for r in runs):
      assert time.monotonic() < deadline
      time.sleep(0.05)
    ended = next(r for r in runs if r.poll() is not None)
    other = runs[1 - runs.index(ended)]
    # The refused one ended while the other still trained.
    assert other.poll() is None
    refused_err = ended.communicate(timeout=TIMEOUT)[1]
    _, err = other.communicate(timeout=TIMEOUT)
  finally:
    for r in runs:
      r.kill()
      r.wait()
  assert ended.returncode == 1, refused_err[-3000:]
  assert (f'train.py: error: {root} is in use by process {other.pid} on host '
          f'{socket.gethostname()}') in refused_err, refused_err[-3000:]
  assert 'Traceback' not in refused_err
  assert 'Started TFF worker' not in refused_err  # Refused before any work.

  assert other.returncode == 0, err[-3000:]
  # Every round exactly once, and the same as a run that was alone.
  assert without_wall_clock(read_rows(root)) == without_wall_clock(
      read_rows(launcher_runs.full_dir))
