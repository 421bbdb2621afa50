"""SIGINT/SIGTERM as `Interrupted`, held back by `held()` until its block ends.

The signals are real: the test process sends them to itself.
"""

import os
import signal
import time

import pytest

from tff_feddst.program import interrupts


def _send_and_wait(signum, log=None):
  """Sends `signum` to this process and gives Python time to run its handler.

  The kernel may deliver the signal to another thread; the main thread runs
  the Python handler at its next check, within the sleeps below.
  """
  os.kill(os.getpid(), signum)
  for _ in range(200):
    time.sleep(0.005)
  if log is not None:
    log.append('after the wait')


@pytest.mark.parametrize('signum, code', [(signal.SIGINT, 130),
                                          (signal.SIGTERM, 143)])
def test_signal_raises_interrupted_and_handlers_come_back(signum, code):
  before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
  log = []
  with pytest.raises(interrupts.Interrupted) as info:
    with interrupts.signals_raise():
      _send_and_wait(signum, log)
  assert log == []  # Raised at once, not at the end of the block.
  assert info.value.signum == signum and info.value.exit_code == code
  assert info.value.signal_name == signal.Signals(signum).name
  assert not isinstance(info.value, Exception)  # `except Exception` passes it.
  assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == before


def test_held_block_completes_then_raises(tmp_path):
  log = []
  with pytest.raises(interrupts.Interrupted) as info:
    with interrupts.signals_raise():
      with interrupts.held():
        with interrupts.held():  # Nested: raised at the outer end only.
          _send_and_wait(signal.SIGTERM, log)
        log.append('inner block done')
        (tmp_path / 'written').write_text('all of it')
      log.append('after the held block')
  assert info.value.signum == signal.SIGTERM
  assert log == ['after the wait', 'inner block done']
  assert (tmp_path / 'written').read_text() == 'all of it'
  # Nothing stays pending: the next held block ends normally.
  with interrupts.signals_raise():
    with interrupts.held():
      pass


def test_exception_in_held_block_wins_over_signal():
  with pytest.raises(ValueError, match='disk full'):
    with interrupts.signals_raise():
      with interrupts.held():
        _send_and_wait(signal.SIGINT)
        raise ValueError('disk full')
  with interrupts.signals_raise():  # The dropped signal does not come back.
    with interrupts.held():
      pass


def test_a_swallowed_signal_is_raised_again_by_check():
  with pytest.raises(interrupts.Interrupted) as info:
    with interrupts.signals_raise():
      interrupts.check()  # Nothing yet.
      try:  # A library that catches everything and carries on.
        _send_and_wait(signal.SIGTERM)
      except BaseException:  # pylint: disable=broad-except
        pass
      interrupts.check()
  assert info.value.signum == signal.SIGTERM
  # Held, then raised at the block's end and swallowed: the same.
  with pytest.raises(interrupts.Interrupted):
    with interrupts.signals_raise():
      try:
        with interrupts.held():
          _send_and_wait(signal.SIGINT)
      except interrupts.Interrupted:
        pass
      interrupts.check()
  # A new block starts clean, and an inner block gives back the outer's.
  with interrupts.signals_raise():
    interrupts.check()
    try:
      with interrupts.signals_raise():
        _send_and_wait(signal.SIGINT)
    except interrupts.Interrupted:
      pass
    interrupts.check()
