"""SIGINT and SIGTERM as an exception, held back while files are written.

A training run is stopped by Ctrl-C (SIGINT) or by a job scheduler (SIGTERM).
Python's defaults are a `KeyboardInterrupt` wherever the main thread happens
to be, or an immediate death, and either can fall in the middle of a
checkpoint save or a CSV release. Inside `signals_raise()` both signals raise
`Interrupted` instead; inside `held()` they are only recorded, and raised when
the block ends, so that what the block writes is written entirely or, when the
signal came before it, not at all.

Signal handlers can only be installed from the main thread; elsewhere
`signals_raise()` changes nothing and the process keeps its handlers.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
  """SIGINT or SIGTERM arrived.

  A `BaseException`, like `KeyboardInterrupt`, so that the `except Exception`
  clauses of error handling do not swallow a request to stop.

  Attributes:
    signum: the signal's number.
    exit_code: the conventional exit status of a process ended by it (128 +
      signum: 130 for SIGINT, 143 for SIGTERM).
  """

  def __init__(self, signum: int, message: str | None = None):
    self.signum = signum
    super().__init__(message or f'Interrupted by {self.signal_name}.')

  @property
  def signal_name(self) -> str:
    return signal.Signals(self.signum).name

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


class _State:
  """The main thread's: signal handlers run in it, and only it holds signals."""
  depth = 0  # Nesting of `held()` blocks.
  pending: int | None = None  # A signal that arrived during them.
  raised: int | None = None  # The signal last raised in this block.


_STATE = _State()


def _handler(signum, frame) -> None:  # pylint: disable=unused-argument
  if _STATE.depth:
    if _STATE.pending is None:
      _STATE.pending = signum
    return
  _raise(signum)


def _raise(signum: int) -> None:
  _STATE.raised = signum
  raise Interrupted(signum)


def check() -> None:
  """Raises `Interrupted` again if a signal was raised in this
  `signals_raise()` block and the program is still running.

  The exception of a signal is raised wherever the main thread is, which
  may be inside a library that catches it and carries on; a loop that
  calls this between its steps stops at the next one all the same.
  """
  if _STATE.raised is not None:
    raise Interrupted(_STATE.raised)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
  """Within the block SIGINT and SIGTERM raise `Interrupted` (main thread)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {s: signal.signal(s, _handler) for s in SIGNALS}
  raised, _STATE.raised = _STATE.raised, None
  try:
    yield
  finally:
    _STATE.raised = raised
    for s, handler in previous.items():
      signal.signal(s, handler)


@contextlib.contextmanager
def held() -> Iterator[None]:
  """Within the block SIGINT and SIGTERM wait: `Interrupted` comes at its end.

  Only the handlers of `signals_raise()` wait; outside it, and in other
  threads than the main one (signals interrupt only the main thread), this
  does nothing. When the block raises, its exception wins and a waiting
  signal is dropped (the process is stopping either way).
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  _STATE.depth += 1
  try:
    yield
  except BaseException:
    _STATE.depth -= 1
    if not _STATE.depth:
      _STATE.pending = None
    raise
  _STATE.depth -= 1
  if not _STATE.depth and _STATE.pending is not None:
    signum, _STATE.pending = _STATE.pending, None
    _raise(signum)
