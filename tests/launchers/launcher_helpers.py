"""Helpers for the launcher tests: paths, tiny flags, child processes."""

import os
from pathlib import Path
import subprocess
import sys

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / 'launchers' / 'train.py'
PLOT = REPO / 'launchers' / 'plot.py'
# train.py, SIGKILLed after the checkpoint of the round given first.
KILLED_AFTER_ROUND = REPO / 'tests' / 'launchers' / 'train_killed_after_round.py'
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


def child_env(**extra):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  env.update(extra)
  return env


def run_script(script, *args, env=None):
  return subprocess.run([sys.executable, str(script), *args], cwd=REPO,
                        env=env or child_env(), capture_output=True, text=True,
                        timeout=TIMEOUT, check=False)
