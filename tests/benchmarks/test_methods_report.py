"""benchmarks/methods.py --report against hand-made runs: the accuracy and
uplink columns, summed client FLOPs, one row per budget group. (A child
process: the script's absl flags would clash with the in-process launchers.)"""

from pathlib import Path
import shutil
import subprocess
import sys

from matplotlib import image as plt_image
import numpy as np

import fake_runs

REPO = Path(__file__).resolve().parents[2]
METHODS = REPO / 'benchmarks' / 'methods.py'


def write_run(root, variant, accuracy_at, budgets=(), setting='seed0',
              extra=lambda r: {}):
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
    row.update(extra(r))
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
  repo_readme = (REPO / 'README.md').read_bytes()
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
  # A report into another docs directory leaves the repository's README.
  assert (REPO / 'README.md').read_bytes() == repo_readme


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


def test_headline_over_seeds(tmp_path):
  runs, docs, dyn = tmp_path / 'runs', tmp_path / 'docs', tmp_path / 'dyn'
  # Constant curves: each run's tail mean is its constant.
  tails = {'random_mask': (0.50, 0.55, 0.57), 'feddst': (0.60, 0.62, 0.64),
           'sparsyfed': (0.52, 0.54, 0.57), 'prunefl': (0.55, 0.10, 0.50)}
  for variant, per_seed in tails.items():
    for seed, acc in enumerate(per_seed):
      # Seed 0's RandomMask and FedDST are benchmarks/dynamics.py's runs.
      shared = seed == 0 and variant in ('random_mask', 'feddst')
      write_run(dyn if shared else runs, variant, lambda r, acc=acc: acc,
                setting='s90_seed0' if shared else f'seed{seed}')
  for seed, acc in enumerate((0.70, 0.71)):  # FedAvg: two seeds only.
    write_run(dyn, 'fedavg', lambda r, acc=acc: acc, setting=f's95_seed{seed}')
  docs.mkdir()
  begin = ('<!-- The table below is written by '
           '`benchmarks/methods.py --report`. -->')
  end = '<!-- End of the generated table. -->'
  readme = tmp_path / 'README.md'
  readme.write_text(f'# Title\n\nintro\n\n{begin}\nold table\n{end}\n\nrest\n')
  proc = subprocess.run(
      [sys.executable, str(METHODS), '--report', f'--root_dir={runs}',
       f'--docs_dir={docs}', f'--dynamics_root_dir={dyn}',
       f'--readme={readme}',
       '--variants=fedavg,random_mask,feddst,sparsyfed,prunefl'],
      capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  text = (docs / 'methods.md').read_text()
  # feddst − random_mask per seed: 0.10, 0.07, 0.07 -> mean 0.08, standard
  # error sqrt(((0.02² + 0.01² + 0.01²) / 2) / 3) = 0.010: beyond 2 s.e.
  # Its tails: mean 0.62, s.e. sqrt((0.02² + 0 + 0.02²) / 2 / 3) = 0.0115.
  # − FedAvg over the two seeds both have: −0.10, −0.09 -> −0.095 ± 0.005.
  # sparsyfed − random_mask: 0.02, −0.01, 0.00 -> +0.003 ± 0.009: level.
  lines = text.splitlines()
  feddst = next(l for l in lines if l.startswith('| FedDST |'))
  assert feddst.startswith('| FedDST | 3 | 0.620 ± 0.012 | ')
  assert ('| **+0.080 ± 0.010** | **-0.095 ± 0.005** (2 of 3 seeds) |'
          in feddst)
  sparsyfed = next(l for l in lines if l.startswith('| SparsyFed |'))
  assert '| +0.003 ± 0.009 |' in sparsyfed
  # Best first: FedAvg, FedDST, RandomMask / SparsyFed.
  order = [l.split(' | ')[0] for l in lines if l.startswith('| ') and
           (' | 3 | ' in l or ' | 2 | ' in l)][:2]
  assert order == ['| FedAvg (dense)', '| FedDST']
  # The README's table: the hand-written rest kept, the verdicts in words.
  new = readme.read_text()
  assert new.startswith('# Title\n\nintro\n\n' + begin + '\n| method |')
  assert new.endswith(f'{end}\n\nrest\n') and 'old table' not in new
  assert 'Above RandomMask; below FedAvg (dense).' in new
  assert 'Within 2 s.e. of RandomMask; below FedAvg (dense).' in new
  # prunefl − random_mask: +0.05, −0.45, −0.07 -> −0.157 ± 0.151: inside 2
  # s.e., but too spread to call level; the seeds are named instead.
  prunefl = next(l for l in new.splitlines() if l.startswith('| PruneFL |'))
  assert "| -0.157 ± 0.151 |" in prunefl
  assert ('The seeds disagree against RandomMask (+0.050, -0.450, -0.070); '
          'the seeds disagree against FedAvg (dense) (-0.150, -0.610).'
          in prunefl)
  # The figure has a panel per seed with lines in it (not a blank image).
  image = plt_image.imread(docs / 'methods' / 'accuracy_vs_uplink_seeds.png')
  assert image.shape[1] > 2 * image.shape[0]  # Three panels side by side.
  assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 20


def test_headline_markers_missing_are_refused(tmp_path):
  runs = tmp_path / 'runs'
  write_run(runs, 'random_mask', lambda r: 0.5)
  (tmp_path / 'docs').mkdir()
  readme = tmp_path / 'README.md'
  readme.write_text('# no markers\n')
  proc = subprocess.run(
      [sys.executable, str(METHODS), '--report', f'--root_dir={runs}',
       f'--docs_dir={tmp_path / "docs"}', '--dynamics_root_dir=',
       f'--readme={readme}', '--settings=seed0', '--variants=random_mask'],
      capture_output=True, text=True, cwd=REPO)
  assert proc.returncode != 0
  assert str(readme) in proc.stderr and 'generated' in proc.stderr
  assert readme.read_text() == '# no markers\n'


def test_mask_and_budget_tables_over_seeds(tmp_path):
  runs = tmp_path / 'runs'
  def masks(turnover, conv1):
    # Density after round 1 0.2, then 0.1; Jaccard r/150 (0.33 at 50, 1 at
    # the end); client FLOPs a tenth of the dense ones.
    return lambda r: {
        'density/conv1/kernel': conv1, 'density/fc1/kernel': 0.1,
        'density/total': 0.2 if r == 1 else 0.1,
        'finalizer/mask_turnover': turnover * r / 150,
        'finalizer/client_mask_jaccard': r / 150,
        'round/client_dense_flops': 2.0e13}
  write_run(runs, 'feddst', lambda r: 0.6, extra=masks(0.017, 0.16))
  write_run(runs, 'feddst', lambda r: 0.6, setting='seed1',
            extra=masks(0.014, 0.16))
  write_run(runs, 'flash_jmwst', lambda r: 0.6, extra=masks(0.5, 1.0))
  write_run(runs, 'flash_jmwst', lambda r: 0.6, setting='seed1',
            extra=masks(0.5, 0.98))
  # Budget groups: 0.05 at 0.5 and 0.7 over the seeds, one client-round
  # over budget on seed 1.
  for seed, acc, over in ((0, 0.5, 0), (1, 0.7, 1)):
    write_run(runs, 'feddst_budgets', lambda r: 0.6, setting=f'seed{seed}',
              budgets=[('0.05', acc, 1e5), ('0.2', 0.8, 3e5)],
              extra=lambda r, over=over: {
                  'round/budget/0.05/over_budget_clients':
                      over if r == 7 else 0,
                  'round/budget/0.2/over_budget_clients': 0})
  (tmp_path / 'docs').mkdir()
  proc = subprocess.run(
      [sys.executable, str(METHODS), '--report', f'--root_dir={runs}',
       f'--docs_dir={tmp_path / "docs"}', '--dynamics_root_dir=',
       '--readme=', '--settings=seed0,seed1',
       '--variants=feddst,flash_jmwst,feddst_budgets'],
      capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = (tmp_path / 'docs' / 'methods.md').read_text().splitlines()
  row = lambda name, after: next(  # pylint: disable=unnecessary-lambda-assignment
      l for l in lines[lines.index(after):] if l.startswith(f'| {name} |'))
  masks_head = '## What the masks did'
  # Seeds that agree give one value, seeds that differ each their own.
  assert row('FedDST', masks_head) == (
      '| FedDST | 2 | conv1 0.16, fc1 0.10 | 0.200 → 0.100 | 1.7% / 1.4% | '
      '0.33 | 1.00 | 0.10 |')
  assert row('FLASH-JMWST', masks_head).startswith(
      '| FLASH-JMWST | 2 | conv1 1.00 / 0.98, fc1 0.10 | 0.200 → 0.100 | '
      '50.0% |')
  budgets_head = '## Budget groups'
  assert row('FedDST, budgets (S=0.8)', budgets_head) == (
      '| FedDST, budgets (S=0.8) | 0.05 | 0.500 | 0.700 | 0.600 ± 0.100 | 1 |')
  assert ('| FedDST, budgets (S=0.8) | 0.2 | 0.800 | 0.800 | 0.800 ± 0.000 '
          '| 0 |') in lines
  # A run that did not record the over-budget count says so, not 0.
  write_run(runs, 'flash_jmwst_budgets', lambda r: 0.6,
            budgets=[('0.05', 0.5, 1e5)])
  proc = subprocess.run(
      [sys.executable, str(METHODS), '--report', f'--root_dir={runs}',
       f'--docs_dir={tmp_path / "docs"}', '--dynamics_root_dir=',
       '--readme=', '--settings=seed0', '--variants=flash_jmwst_budgets'],
      capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert ('| FLASH-JMWST, budgets (S=0.8) | 0.05 | 0.500 | 0.500 (1 seed) '
          '| — |') in (tmp_path / 'docs' / 'methods.md').read_text()
