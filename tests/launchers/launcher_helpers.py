"""Helpers for the launcher tests: paths, tiny flags, child processes."""

import csv
import os
from pathlib import Path
import subprocess
import sys

from tff_feddst import program

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / 'launchers' / 'train.py'
PLOT = REPO / 'launchers' / 'plot.py'
EXPORT = REPO / 'launchers' / 'export.py'
# train.py, SIGKILLed after the checkpoint of the round given first.
KILLED_AFTER_ROUND = (REPO / 'tests' / 'launchers' /
                      'train_killed_after_round.py')
# Tiny FedDST: 6 rounds, readjusting before and after the kill point, with
# every option whose state must survive a resume (the consensus rule's round
# counter, the sparsity schedule, the round-0 mask of the turnover metric).
TINY_FLAGS = [
    '--dataset=digits', '--model=mlp', '--total_clients=10',
    '--clients_per_round=3', '--rounds=6', '--client_epochs=2',
    '--batch_size=16', '--client_learning_rate=0.05', '--sparsity=0.8',
    '--readjustment_ratio=0.2', '--rounds_between_readjustments=1',
    '--readjustment_end_round=6', '--eval_every=2', '--checkpoint_every=1',
    '--seed=3', '--algorithm=feddst_consensus', '--readjust_after_epoch=1',
    '--remember_old', '--upload_dtype=bfloat16', '--final_sparsity=0.85',
]
TIMEOUT = 300
WALL_CLOCK_COLUMNS = ('time/elapsed_seconds', 'time/round_seconds')


def child_env(**extra):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  env.update(extra)
  return env


def run_script(script, *args, env=None):
  return subprocess.run([sys.executable, str(script), *args], cwd=REPO,
                        env=env or child_env(), capture_output=True, text=True,
                        timeout=TIMEOUT, check=False)


def read_rows(run_dir):
  """The rows of a run's metrics.csv."""
  with open(program.RunPaths.of(run_dir).metrics_csv, newline='') as f:
    return list(csv.DictReader(f))


def without_wall_clock(rows):
  """`rows` without the columns that differ between identical runs."""
  return [{k: v for k, v in row.items() if k not in WALL_CLOCK_COLUMNS}
          for row in rows]


def process_alive(pid):
  """Whether `pid` is a live (not zombie) worker_binary."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      stat = f.read()
  except FileNotFoundError:
    return False
  state = stat.rsplit(')', 1)[1].split()[0]
  cmdline = Path(f'/proc/{pid}/cmdline').read_text()
  return state != 'Z' and 'worker_binary' in cmdline
