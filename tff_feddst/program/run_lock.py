"""One run at a time in a run directory: an exclusive flock on its `.lock`.

Two runs started on one root directory (a job submitted twice, a second
terminal) would both resume from the same checkpoint and interleave their
releases: one dies on a checkpoint the other saved, and metrics.csv ends with
rounds twice or missing. `hold_run_directory` takes an exclusive
`fcntl.flock` on the directory's lock file for as long as the run lasts, and a
second run is refused at once with `RunDirectoryInUseError`, which names the
holder (the lock file holds "pid host").

The operating system releases a flock when the process holding it ends, however
it ends (SIGKILL included), so a crashed run never leaves a stale lock behind;
the text in the file is only read while the lock is held. Within one process
the lock is re-entrant (the launcher takes it before loading data, `train`
again), because two flocks on one file by one process would refuse each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator

from tff_feddst.program import paths


class RunDirectoryInUseError(RuntimeError):
  """Another process holds the run directory."""


# Lock files this process holds: real path -> [file descriptor, depth].
_HELD: dict[str, list[int]] = {}


def _holder(fd: int) -> str:
  """'process N on host H' from the lock file (written just after locking)."""
  text = ''
  for _ in range(20):  # The holder may be between its lock and its write.
    text = os.pread(fd, 4096, 0).decode('utf-8', 'replace').strip()
    if text:
      break
    time.sleep(0.05)
  pid, _, host = text.partition(' ')
  if not pid:
    return 'another process'
  return f'process {pid} on host {host or "(unknown)"}'


@contextlib.contextmanager
def hold_run_directory(root_dir: str | os.PathLike) -> Iterator[None]:
  """Holds the run directory `root_dir` (created if missing) during the block.

  Raises:
    RunDirectoryInUseError: another process holds it.
  """
  run_paths = paths.RunPaths.of(root_dir)
  created = not run_paths.root.exists()
  run_paths.root.mkdir(parents=True, exist_ok=True)
  key = os.path.realpath(run_paths.lock)
  if key in _HELD:
    _HELD[key][1] += 1
    try:
      yield
    finally:
      _HELD[key][1] -= 1
    return
  fd = os.open(key, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _holder(fd)
    os.close(fd)
    raise RunDirectoryInUseError(
        f'{run_paths.root} is in use by {holder}; one run at a time may use '
        'a root directory.') from None
  except BaseException:
    os.close(fd)
    raise
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()} {socket.gethostname()}\n'.encode(), 0)
    _HELD[key] = [fd, 1]
    yield
  finally:
    _HELD.pop(key, None)
    if created:
      _remove_if_only_lock(run_paths)
    os.close(fd)  # Releases the flock.


def _remove_if_only_lock(run_paths: paths.RunPaths) -> None:
  """A run that created its directory and wrote nothing (e.g. its data did
  not load) leaves no directory holding just `.lock` behind."""
  try:
    if [p.name for p in run_paths.root.iterdir()] == [run_paths.lock.name]:
      run_paths.lock.unlink()
      run_paths.root.rmdir()  # Fails harmlessly if anything appeared.
  except OSError:
    pass
