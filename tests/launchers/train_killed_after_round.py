"""launchers/train.py, SIGKILLed right after the checkpoint of one round.

A crash at the worst moment, for the exact-resume tests. The kill comes from
`program.train`'s `after_checkpoint` callback, so the library itself carries
no test hook:

  python tests/launchers/train_killed_after_round.py N [train.py flags]

runs the launcher with those flags and kills it (and nothing else) with SIGKILL
once the checkpoint of round N is complete.
"""

import importlib.util
import os
from pathlib import Path
import signal
import sys

from absl import app
from absl import logging

TRAIN = Path(__file__).resolve().parents[2] / 'launchers' / 'train.py'


def main():
  kill_round = int(sys.argv.pop(1))
  spec = importlib.util.spec_from_file_location('train_launcher', TRAIN)
  launcher = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(launcher)
  train = launcher.program.train

  def after_checkpoint(round_num):
    if round_num == kill_round:
      logging.warning('Killing this process after the checkpoint of round %d '
                      '(test driver).', round_num)
      logging.flush()
      os.kill(os.getpid(), signal.SIGKILL)

  def train_then_die(*args, **kwargs):
    return train(*args, after_checkpoint=after_checkpoint, **kwargs)

  launcher.program.train = train_then_die
  app.run(launcher.main)


if __name__ == '__main__':
  main()
