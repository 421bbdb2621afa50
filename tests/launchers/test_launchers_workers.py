"""A worker that dies mid-run stops the launcher with its name, the run left resumable."""

import csv
import re
import subprocess
import sys
import time

from launcher_helpers import REPO, TIMEOUT, TRAIN, child_env

from tff_feddst import runtime

FLAGS = ['--dataset=digits', '--model=mlp', '--total_clients=10',
         '--clients_per_round=3', '--client_epochs=1', '--batch_size=16',
         '--sparsity=0.8', '--readjustment_ratio=0.2',
         '--rounds_between_readjustments=1', '--readjustment_end_round=6',
         '--eval_every=50', '--checkpoint_every=1', '--seed=5']


def _checkpoints(root):
  d = root / 'checkpoints'
  if not d.exists():
    return []
  return sorted(int(m.group(1)) for p in d.iterdir()
                if (m := re.fullmatch(r'program_state_(\d+)', p.name)))


def test_dead_worker_is_named_and_the_run_left_resumable(tmp_path):
  root = tmp_path / 'run'
  worker = runtime.LocalWorker.start()
  proc = subprocess.Popen(
      [sys.executable, str(TRAIN), *FLAGS, '--rounds=1000',
       f'--root_dir={root}', f'--workers={worker.address}'],
      cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + TIMEOUT
    while not [c for c in _checkpoints(root) if c >= 2]:
      assert proc.poll() is None and time.time() < deadline
      time.sleep(0.05)
    worker.process.kill()
    _, err = proc.communicate(timeout=TIMEOUT)
  finally:
    proc.kill()
    worker.stop()
  assert proc.returncode != 0
  assert worker.address in err, err[-3000:]

  # Left resumable: the last checkpoint is complete and every round up to it
  # released once (a restart replaces rows released after it:
  # tests/program/test_program_train_loop.py, and the launcher's resume:
  # launcher_runs in test_launchers_train.py).
  last = max(_checkpoints(root))
  assert not [p for p in (root / 'checkpoints').iterdir() if 'temp' in p.name]
  with open(root / 'results' / 'metrics.csv') as f:
    rounds = [int(r['round']) for r in csv.DictReader(f)]
  assert rounds in (list(range(1, last + 1)), list(range(1, last + 2)))
  assert f'resume from the checkpoint of round {last}.' in err, err[-3000:]
