"""benchmarks/methods.py --report against hand-made runs: the accuracy and
uplink columns, summed client FLOPs, one row per budget group. (A child
process: the script's absl flags would clash with the in-process launchers.)"""

from pathlib import Path
import shutil
import subprocess
import sys

import fake_runs

REPO = Path(__file__).resolve().parents[2]
METHODS = REPO / 'benchmarks' / 'methods.py'


def write_run(root, variant, accuracy_at, budgets=(), setting='seed0'):
  rows = []
  for r in range(1, 151):
    evaluated = r % 5 == 0
    row = {'round': r, 'round/cumulative_uplink_bytes': r * 1.0e6,
           'round/client_flops': 2.0e12,
           'test/client_mean_accuracy': accuracy_at(r) if evaluated else '',
           'test/accuracy': accuracy_at(r) if evaluated else ''}
    for label, accuracy, per_client in budgets:
      row[f'round/budget/{label}/uplink_bytes_per_client'] = per_client
      row[f'test/budget/{label}/client_mean_accuracy'] = (
          accuracy if evaluated else '')
    rows.append(row)
  fake_runs.write_run(Path(root) / setting / variant,
                      dict(algorithm=variant), rows)


def test_report_rows_and_budget_groups(tmp_path):
  root, docs = tmp_path / 'runs', tmp_path / 'docs'
  # FedAvg is benchmarks/dynamics.py's run (one per seed, under s95_*).
  write_run(tmp_path / 'dynamics', 'fedavg', lambda r: r / 200,
            setting='s95_seed0')
  write_run(root, 'feddst_budgets', lambda r: 0.6,
            budgets=[('0.2', 0.7, 3.0e5), ('0.05', 0.5, 1.0e5)])
  docs.mkdir()
  proc = subprocess.run(
      [sys.executable, str(METHODS), '--report', f'--root_dir={root}',
       f'--docs_dir={docs}', f'--dynamics_root_dir={tmp_path / "dynamics"}',
       '--settings=seed0',
       '--variants=fedavg,feddst_budgets'],
      capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  text = (docs / 'methods.md').read_text()
  # fedavg: within 50 MB the best is round 50 (0.25); tail 101..150 evaluated
  # at 105..150 -> mean of r/200; 150 MB; 150 rounds x 2 TFLOP.
  tail = sum(r / 200 for r in range(105, 151, 5)) / 10
  assert (f'| fedavg | 150 | 0.250 | 0.500 | 0.750 | {tail:.3f} | 150.000 | '
          '300.000 | — |') in text
  # Budget groups in density order, their own accuracy and uplink.
  lines = text.splitlines()
  first = lines.index(next(l for l in lines if '[budget 0.05]' in l))
  assert '| feddst_budgets [budget 0.05] | — | — | — | — | 0.500 | — | — | 0.100 |' == lines[first]
  assert '| feddst_budgets [budget 0.2] | — | — | — | — | 0.700 | — | — | 0.300 |' == lines[first + 1]
  assert 'not complete' in text and (docs / 'methods' / 'seed0' /
                                     'accuracy_vs_uplink.png').exists()
  # Commands show neutral run roots, not this test's directories.
  assert str(tmp_path) not in text
  assert '--root_dir=runs/dynamics/s95_seed0/fedavg\n' in text
  assert '--root_dir=runs/methods/seed0/feddst_budgets ' in text


def _report(tmp_path, *flags):
  return subprocess.run(
      [sys.executable, str(METHODS), f'--root_dir={tmp_path / "runs"}',
       f'--docs_dir={tmp_path / "docs"}', '--dynamics_root_dir=',
       '--settings=seed0', '--variants=feddst,sparsyfed', *flags],
      capture_output=True, text=True, cwd=REPO)


def test_finished_runs_are_archived_and_outlive_their_directories(tmp_path):
  runs, docs = tmp_path / 'runs', tmp_path / 'docs'
  write_run(runs, 'feddst', lambda r: r / 300)
  write_run(runs, 'sparsyfed', lambda r: 0.5)
  # sparsyfed stopped at round 80: not finished, so not archived.
  csv_path = runs / 'seed0' / 'sparsyfed' / 'results' / 'metrics.csv'
  csv_path.write_text(''.join(csv_path.read_text().splitlines(True)[:81]))
  docs.mkdir()
  proc = _report(tmp_path, '--report')
  assert proc.returncode == 0, proc.stderr[-3000:]
  first = (docs / 'methods.md').read_text()
  archive = docs / 'methods' / 'seed0' / 'runs'
  for name in ('hparams.json', 'results/metrics.csv'):
    assert ((archive / 'feddst' / name).read_bytes() ==
            (runs / 'seed0' / 'feddst' / name).read_bytes())
  assert not (archive / 'sparsyfed').exists()
  # A new machine: the run directories are gone, the archive is in the repo.
  shutil.rmtree(runs)
  proc = _report(tmp_path, '--report')
  assert proc.returncode == 0, proc.stderr[-3000:]
  again = (docs / 'methods.md').read_text()
  feddst_row = next(l for l in first.splitlines() if l.startswith('| feddst |'))
  assert feddst_row in again and "complete ['feddst']" in again
  # Running the study skips the archived run (no launcher starts).
  proc = _report(tmp_path, '--variants=feddst')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'seed0/feddst: finished (archived); not run again' in proc.stdout
  assert 'launchers/train.py' not in proc.stdout
  assert not runs.exists()


def test_unknown_variant_is_refused(tmp_path):
  proc = subprocess.run(
      [sys.executable, str(METHODS), '--variants=fedsgd',
       f'--root_dir={tmp_path}'], capture_output=True, text=True, cwd=REPO)
  assert proc.returncode != 0 and '--variants' in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_paired_differences_against_random_mask(tmp_path):
  runs, docs = tmp_path / 'runs', tmp_path / 'docs'
  write_run(runs, 'random_mask', lambda r: 0.5)
  # Evaluations 105..150: +0.01 in rounds divisible by 10, +0.03 in the
  # others, so the mean difference is 0.02 and its standard error
  # sqrt((10 × 0.01² / 9) / 10) = 0.0033.
  write_run(runs, 'feddst', lambda r: 0.51 if r % 10 == 0 else 0.53)
  write_run(runs, 'sparsyfed', lambda r: 0.9)
  csv_path = runs / 'seed0' / 'sparsyfed' / 'results' / 'metrics.csv'
  csv_path.write_text(''.join(csv_path.read_text().splitlines(True)[:81]))
  docs.mkdir()
  proc = subprocess.run(
      [sys.executable, str(METHODS), '--report', f'--root_dir={runs}',
       f'--docs_dir={docs}', '--dynamics_root_dir=', '--settings=seed0',
       '--variants=random_mask,feddst,sparsyfed'],
      capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = (docs / 'methods.md').read_text().splitlines()
  assert '| feddst | +0.020 ± 0.003 | — |' in lines
  assert '| random_mask | — | — |' in lines
  # An unfinished run has no tail to compare.
  assert '| sparsyfed | — | — |' in lines
