"""How the launchers speak to a user: no TensorFlow chatter, helpful flag errors.

TensorFlow prints CUDA/cuDNN/TensorRT registration errors, CPU-feature and
oneDNN notices and Grappler warnings from C++ as it loads, and TFF/Keras log
INFO lines through absl; none of it is about the run. `silence_from_argv`
must run before TensorFlow is imported (the C++ level is read then). Our own
log lines stay. `--tf_log_level=0` (0 all, 1 no INFO, 2 no WARNING, 3 no
ERROR; default 3) shows TensorFlow's output again, and also lets library
INFO lines through when below 3.
"""

from __future__ import annotations

import logging
import os
import sys

FLAG = '--tf_log_level'
DEFAULT_LEVEL = '3'


def _level(argv) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith(FLAG + '='):
      return arg.split('=', 1)[1]
    if arg == FLAG and i + 1 < len(argv):
      return argv[i + 1]
  return DEFAULT_LEVEL  # Not the environment's: quiet unless asked.


class _OwnRecordsOnly(logging.Filter):
  """Lets through absl records from this project, not from installed packages."""

  def filter(self, record: logging.LogRecord) -> bool:
    return 'site-packages' not in record.pathname or record.levelno >= (
        logging.WARNING)


def exit_quietly_on_interrupt(program: str) -> None:
  """Until the run installs its own handlers: Ctrl-C exits with one line.

  A launcher spends its first ~10 s importing TensorFlow and building the
  process; a Ctrl-C then would print a long KeyboardInterrupt traceback from
  inside some import. Nothing has been written yet, so exiting at once is
  safe. The training program's own handlers (`program.signals_raise`)
  replace this one while the run holds its directory.
  """
  import signal  # pylint: disable=g-import-not-at-top

  def handler(signum, frame):
    del signum, frame
    sys.stderr.write(interrupted_while_starting(program, 'SIGINT') + '\n')
    sys.stderr.flush()
    os._exit(130)  # pylint: disable=protected-access

  signal.signal(signal.SIGINT, handler)


def interrupted_while_starting(program: str, signal_name: str) -> str:
  """The one line for a signal that ended a launcher before it wrote anything."""
  return (f'{program}: interrupted ({signal_name}) while starting; nothing '
          'was written — run the same command to start.')


def silence_from_argv(argv=None) -> str:
  """Sets TensorFlow's C++ log level from `--tf_log_level` (before import)."""
  level = _level(sys.argv if argv is None else argv)
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = level
  return level


def filter_library_logs(level: str) -> None:
  """At level 3, drops INFO lines that installed packages log through absl."""
  if level != '3':
    return
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.get_absl_handler().addFilter(_OwnRecordsOnly())


def define_flag() -> None:
  """The absl flag, so that --help lists it and parsing accepts it."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_enum('tf_log_level', DEFAULT_LEVEL, ['0', '1', '2', '3'],
                    "TensorFlow's own log output: 0 shows all; 3 (default) "
                    'hides its start-up chatter and library INFO lines.')


def parse_flags_with_suggestions(argv):
  """absl's flag parsing, with 'did you mean' for unknown flags.

  absl suggests only close spellings; a user who types --epochs for
  --client_epochs gets nothing. This adds every flag whose name contains the
  unknown one (or is close to it), then exits like absl with status 1.
  """
  import difflib  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.UnrecognizedFlagError as e:
    name = e.flagname
    known = sorted(flags.FLAGS)
    hints = [k for k in known if name and name in k and k != name]
    hints += [k for k in difflib.get_close_matches(name, known, n=3)
              if k not in hints]
    hint = (' Did you mean ' + ' or '.join(f'--{h}' for h in hints[:4]) +
            '?') if hints else ''
    sys.stderr.write(f'FATAL Flags parsing error: Unknown command line flag '
                     f'{name!r}.{hint}\n'
                     'Pass --helpshort or --helpfull to see help on flags.\n')
    sys.exit(1)
  except flags.IllegalFlagValueError as e:
    message = str(e)
    # A multi-flag validator's message starts with every flag it read
    # ('flags a=None, b=1.5, ...: --b must be ...'); keep what it says.
    if message.startswith('flags ') and ': --' in message:
      message = message[message.index(': --') + 2:]
    sys.stderr.write(f'FATAL Flags parsing error: {message}\n'
                     'Pass --helpshort or --helpfull to see help on flags.\n')
    sys.exit(1)
  except flags.Error:
    return app.parse_flags_with_usage(argv)
