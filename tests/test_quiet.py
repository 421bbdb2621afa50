"""The launchers' TensorFlow log level: quiet unless --tf_log_level asks."""

import logging

from tff_feddst import quiet


def test_level_from_the_flag_or_quiet_by_default(monkeypatch):
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '0')  # The environment: ignored.
  assert quiet.silence_from_argv(['train.py']) == '3'
  assert quiet.silence_from_argv(['train.py', '--tf_log_level=0']) == '0'
  assert quiet.silence_from_argv(['train.py', '--tf_log_level', '1']) == '1'
  import os  # pylint: disable=g-import-not-at-top
  assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '1'


def test_library_info_lines_are_dropped_ours_kept():
  keep = quiet._OwnRecordsOnly()  # pylint: disable=protected-access

  def record(path, level):
    return logging.LogRecord('absl', level, path, 1, 'm', None, None)

  assert not keep.filter(record('/x/.venv/lib/site-packages/tff/a.py',
                                logging.INFO))
  assert keep.filter(record('/x/.venv/lib/site-packages/tff/a.py',
                            logging.WARNING))
  assert keep.filter(record('/x/tff_feddst/program/train_loop.py',
                            logging.INFO))
