"""The benchmarks behind docs/performance.md's tables, at the smallest size:
each runs and prints its table. (Child processes, as the benchmarks are
scripts with their own absl flags.)"""

from pathlib import Path
import re
import subprocess
import sys

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / 'benchmarks'
NUMBER = r'\d+(\.\d+)?'


def run(script, *args, timeout=600):
  proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                        capture_output=True, text=True, timeout=timeout,
                        cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def rows(text, first_cell):
  """The cells of the table rows whose first cell starts with `first_cell`."""
  return [[c.strip() for c in line.strip('|').split('|')]
          for line in text.splitlines()
          if line.startswith(f'| {first_cell}')]


def test_speed_compare_table():
  # Two measured rounds: FedDST readjusts in the first (R_adj = 2).
  # Without the three peak-memory processes (one per configuration).
  out = run('speed.py', '--mode=compare', '--rounds=2', '--nomemory',
            '--clients_per_round=2', '--examples_per_client=8', '--epochs=1')
  for name in ('stock_fedavg S=0.0', 'fedavg S=0.0', 'feddst S=0.8'):
    (cells,) = rows(out, name)
    assert len(cells) == 10
    assert all(re.fullmatch(NUMBER, c) for c in cells[1:3] + cells[4:8]), cells
    assert cells[8:] == ['—', '—']
  (stock,) = rows(out, 'stock_fedavg')
  assert stock[5] == '1.0' and stock[7] == '1.0'  # Ratios to itself.
  (feddst,) = rows(out, 'feddst')
  assert re.fullmatch(NUMBER, feddst[3])  # It readjusted once.


def test_speed_workers_and_scale_tables():
  out = run('speed.py', '--mode=workers', '--worker_counts=2', '--rounds=1',
            '--clients_per_round=2', '--examples_per_client=8', '--epochs=1')
  (cells,) = rows(out, '2 |')
  assert all(re.fullmatch(NUMBER, c) for c in cells), cells
  out = run('speed.py', '--mode=scale', '--rounds=1',
            '--scale_clients_per_round=2', '--scale_total_clients=10',
            '--scale_examples_per_client=8')
  (cells,) = rows(out, '10 | 2 |')
  assert all(re.fullmatch(NUMBER, c) for c in cells), cells
  # Client FLOPs of 2 clients x 8 examples, sparse at S=0.8 below dense.
  assert 0 < float(cells[6]) < float(cells[7])


def test_floor_table():
  # Two of the four rows: each mode once, each thread count once.
  out = run('floor.py', '--repetitions=1', '--examples=8', '--epochs=1',
            '--configs=graph:1,xla:2')
  table = [c for c in rows(out, '') if c[0] in ('graph', 'xla')]
  assert [(c[0], c[1]) for c in table] == [('graph', '1'), ('xla', '2')]
  for cells in table:
    assert all(re.fullmatch(NUMBER, c) for c in cells[2:]), cells
    assert float(cells[4]) > 0  # GFLOP of 8 examples x 1 epoch.


def test_export_sizes_table():
  out = run('export_sizes.py')
  names = [c[0] for c in rows(out, 'model') + rows(out, 'saved_model')]
  assert sorted(names) == ['model_dense.tflite', 'model_sparse.tflite',
                           'model_sparse_int8.tflite', 'saved_model']
  (dense,), (sparse,) = rows(out, 'model_dense'), rows(out, 'model_sparse.')
  size = lambda cells: int(cells[1].replace(',', ''))
  assert size(sparse) < size(dense) / 2  # S = 0.8, values and indices.


def test_prunefl_time_coefficients_file_is_what_the_registry_takes(tmp_path):
  output = tmp_path / 'times.json'
  run('prunefl_time_coefficients.py', '--model=digits_cnn', '--steps=2',
      '--repeats=1', f'--output={output}')
  import json  # pylint: disable=g-import-not-at-top
  from tff_feddst.algorithms import registry  # pylint: disable=g-import-not-at-top
  measured = json.loads(output.read_text())
  assert len(measured['seconds_per_weight_per_example']) == len(
      measured['kernel_sizes']) == len(measured['layers'])
  assert all(t >= 0 for t in measured['seconds_per_weight_per_example'])
  hp = registry.resolve('prunefl', {'prunefl_time_coefficients': str(output)},
                        rounds=10, size_defaults={
                            'rounds_between_readjustments': 2})
  assert hp['prunefl_time_coefficients'] != 'flops'  # The numbers, recorded.


def test_floor_refuses_a_bad_row_naming_the_flag():
  proc = subprocess.run([sys.executable, str(BENCHMARKS / 'floor.py'),
                         '--configs=graph:1,gpu:2'], capture_output=True,
                        text=True, timeout=120, cwd=REPO)
  assert proc.returncode != 0
  assert '--configs: gpu:2 is not mode:threads' in proc.stderr, proc.stderr
  assert 'Traceback' not in proc.stderr
