r"""Short runs of every registered algorithm, compared row by row with earlier ones.

A refactor that must not change results runs this before (into one root) and
after (into another, with --compare_to the first): every run's
results/metrics.csv must match bit for bit, wall-clock columns aside.

  uv run python experiments/bit_identical.py --root_dir=/tmp/before
  uv run python experiments/bit_identical.py --root_dir=/tmp/after \
      --compare_to=/tmp/before

Runs are sequential child processes of launchers/train.py (digits, MLP, 10
clients, 3 per round, 4 rounds, 2 local epochs); a run whose directory
already holds a finished metrics.csv is not run again. Exits 1 when any run
fails or differs.
"""

import csv
import os
from pathlib import Path
import subprocess
import sys

from absl import app
from absl import flags

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / 'launchers' / 'train.py'
WALL_CLOCK = ('time/elapsed_seconds', 'time/round_seconds')
ROUNDS = 4

_COMMON = [
    '--dataset=digits', '--model=mlp', '--total_clients=10',
    '--clients_per_round=3', f'--rounds={ROUNDS}', '--client_epochs=2',
    '--batch_size=16', '--client_learning_rate=0.05', '--eval_every=2',
    '--checkpoint_every=100', '--seed=3',
]
_READJUST = ['--sparsity=0.8', '--readjustment_ratio=0.2',
             '--rounds_between_readjustments=1',
             f'--readjustment_end_round={ROUNDS}']
_BUDGETS = '--client_density_budgets=0.05:0.3,0.1:0.3,0.2:0.4'
_DP = ['--sparsity=0.8', '--dp_noise_multiplier=0', '--dp_clip_norm=1.0']
_PRUNEFL = ['--sparsity=0.7', '--rounds_between_readjustments=1',
            '--prunefl_initial_interval_steps=20',
            '--prunefl_initial_reconfigurations=10']

# name -> flags besides _COMMON; every name of registry.ALGORITHMS at least
# once, plus the budgets, DP and 16-bit upload variants.
RUNS = {
    'fedavg': ['--algorithm=fedavg'],
    'fedavgm': ['--algorithm=fedavgm'],
    'fedprox': ['--algorithm=fedprox', '--prox_mu=0.1'],
    'random_mask': ['--algorithm=random_mask', '--sparsity=0.8'],
    'feddst': ['--algorithm=feddst', *_READJUST],
    'feddst_prox': ['--algorithm=feddst_prox', *_READJUST, '--prox_mu=0.1'],
    'feddst_consensus': ['--algorithm=feddst_consensus', *_READJUST,
                         '--readjust_after_epoch=1', '--remember_old',
                         '--upload_dtype=bfloat16', '--final_sparsity=0.85'],
    'prunefl': ['--algorithm=prunefl', *_PRUNEFL],
    'sparsyfed': ['--algorithm=sparsyfed', '--sparsity=0.8',
                  '--sparsyfed_beta=1.5'],
    'flash_spdst': ['--algorithm=flash_spdst', '--sparsity=0.8'],
    'flash_jmwst': ['--algorithm=flash_jmwst', '--sparsity=0.8',
                    '--flash_prune_rate=0.3'],
    'feddst_budgets': ['--algorithm=feddst', *_READJUST, _BUDGETS],
    'random_mask_budgets': ['--algorithm=random_mask', '--sparsity=0.8',
                            _BUDGETS],
    'flash_spdst_budgets': ['--algorithm=flash_spdst', '--sparsity=0.8',
                            _BUDGETS],
    'flash_jmwst_budgets': ['--algorithm=flash_jmwst', '--sparsity=0.8',
                            _BUDGETS],
    # DP at z = 0 (clipping only): TFF's Gaussian noise is drawn unseeded
    # (tensorflow_privacy's gaussian_query), so z > 0 differs run to run.
    'random_mask_dp': ['--algorithm=random_mask', *_DP],
    'fedavg_dp_adaptive': ['--algorithm=fedavg', '--dp_noise_multiplier=0',
                           '--dp_adaptive_quantile=0.5'],
    'random_mask_server_momentum': ['--algorithm=random_mask',
                                    '--sparsity=0.8', '--server_momentum=0.9'],
}

_ROOT_DIR = flags.DEFINE_string('root_dir', None, 'Where the runs go, one '
                                'directory per run name.', required=True)
_COMPARE_TO = flags.DEFINE_string('compare_to', None, 'A --root_dir of an '
                                  'earlier invocation to compare with.')
_ONLY = flags.DEFINE_list('only', None, 'Run just these names.')


def _metrics_csv(run_dir: Path) -> Path:
  return run_dir / 'results' / 'metrics.csv'


def _rows(run_dir: Path) -> list[dict[str, str]]:
  with open(_metrics_csv(run_dir), newline='') as f:
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK}
            for row in csv.DictReader(f)]


def _finished(run_dir: Path) -> bool:
  return (_metrics_csv(run_dir).exists() and
          len(_rows(run_dir)) >= ROUNDS)


def _run(name: str, argv: list[str], run_dir: Path) -> bool:
  if _finished(run_dir):
    print(f'{name}: already run', flush=True)
    return True
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  done = subprocess.run(
      [sys.executable, str(TRAIN), *_COMMON, *argv, f'--root_dir={run_dir}'],
      cwd=REPO, env=env, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    print(f'{name}: FAILED\n{done.stderr[-3000:]}', flush=True)
    return False
  print(f'{name}: ran', flush=True)
  return True


def _compare(name: str, run_dir: Path, other_dir: Path) -> bool:
  mine, theirs = _rows(run_dir), _rows(other_dir)
  if mine == theirs:
    print(f'{name}: {len(mine)} rows identical', flush=True)
    return True
  for i, (a, b) in enumerate(zip(mine, theirs)):
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if differ:
      print(f'{name}: row {i} differs in {differ[:8]}', flush=True)
      return False
  print(f'{name}: {len(mine)} rows against {len(theirs)}', flush=True)
  return False


def main(argv):
  del argv
  root = Path(_ROOT_DIR.value)
  names = _ONLY.value or list(RUNS)
  ok = True
  for name in names:
    ok = _run(name, RUNS[name], root / name) and ok
  if _COMPARE_TO.value:
    other = Path(_COMPARE_TO.value)
    for name in names:
      if _finished(root / name):
        ok = _compare(name, root / name, other / name) and ok
  print('all identical' if ok and _COMPARE_TO.value else
        ('all ran' if ok else 'FAILURES'), flush=True)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  app.run(main)
