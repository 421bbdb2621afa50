"""Round time and peak memory: stock TFF FedAvg vs our FedAvg and FedDST, and scale.

Every configuration runs in a fresh child process, so its peak RSS is its own:
the Python process (`ru_maxrss` of the child) and its TFF worker (reaped by the
runtime, so it shows in the child's RUSAGE_CHILDREN).

  uv run python benchmarks/speed.py --mode=compare   # the paper CNN, 20 clients
  uv run python benchmarks/speed.py --mode=workers   # 1, 2, 4 local workers
  uv run python benchmarks/speed.py --mode=scale     # clients per round x total

Data are seeded synthetic images generated per sampled client on demand, so
memory does not grow with the total number of clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app
from absl import flags


_MODE = flags.DEFINE_enum('mode', 'compare', ['compare', 'scale', 'workers'],
                          'Which table to produce.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Measured rounds after warm-up.')
_CLIENTS = flags.DEFINE_integer('clients_per_round', 20, 'compare: clients.')
_EXAMPLES = flags.DEFINE_integer('examples_per_client', 150, 'Per client.')
_EPOCHS = flags.DEFINE_integer('epochs', 10, 'compare: local epochs.')
_SCALE_EPOCHS = flags.DEFINE_integer('scale_epochs', 1, 'scale: local epochs.')
_SCALE_EXAMPLES = flags.DEFINE_integer('scale_examples_per_client', 200,
                                       'scale: examples per client.')
_SCALE_CLIENTS = flags.DEFINE_list('scale_clients_per_round',
                                   ['10', '20', '50', '100'], 'scale: rows.')
_SCALE_TOTALS = flags.DEFINE_list('scale_total_clients', ['400', '3400'],
                                  'scale: columns.')
_MEMORY = flags.DEFINE_bool(
    'memory', True, "compare: also measure each configuration's peak RSS, in "
    'a process of its own.')
_WORKER_COUNTS = flags.DEFINE_list('worker_counts', ['1', '2', '4'],
                                   'workers: rows (local workers).')
_OUT = flags.DEFINE_string('output', None, 'Also append JSON lines here.')
_INTRA_OP = flags.DEFINE_integer(
    'worker_intra_op_threads', None, "The local worker's TF intra-op thread "
    'pool per op (TF_NUM_INTRAOP_THREADS); unset: TF default (one per CPU).',
    lower_bound=1)
_CONCURRENCY = flags.DEFINE_integer(
    'worker_concurrency', None, 'Cap on client computations the local worker '
    'runs at once (its --max_concurrent_computation_calls); unset: the '
    "library's default (one per CPU); 0: no cap (TFF's default).",
    lower_bound=0)


PAIRED = (('stock_fedavg', 0.0), ('fedavg', 0.0), ('feddst', 0.8))
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                     'speed_rounds.py')


def _spawn(config) -> dict:
  proc = subprocess.run(
      [sys.executable, CHILD, json.dumps(config)],
      capture_output=True, text=True, env=dict(os.environ,
                                               TF_CPP_MIN_LOG_LEVEL='3'))
  if proc.returncode != 0:
    raise RuntimeError(f'config {config} failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _emit(row):
  print(json.dumps(row), flush=True)
  if _OUT.value:
    with open(_OUT.value, 'a') as f:
      f.write(json.dumps(row) + '\n')


def compare():
  base = dict(rounds=_ROUNDS.value, clients=_CLIENTS.value,
              examples=_EXAMPLES.value, epochs=_EPOCHS.value,
              total_clients=400, worker_concurrency=_CONCURRENCY.value,
              worker_intra_op_threads=_INTRA_OP.value)
  paired = _spawn(dict(base, paired=PAIRED))
  _emit(paired)
  # Peak memory needs one process per configuration.
  unmeasured = dict(python_peak_rss_mb='—', worker_peak_rss_mb='—')
  memory = {a: _spawn(dict(base, algorithm=a, sparsity=s, rounds=2))
            if _MEMORY.value else unmeasured for a, s in PAIRED}
  if _MEMORY.value:
    for row in memory.values():
      _emit(row)
  print('\n| run | median s/round | non-readjusting | readjusting | '
        'first round s | median ratio to stock | CPU s/round | CPU ratio to '
        'stock | python RSS MB | worker RSS MB |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for name, s in PAIRED:
    t, m = paired[name], memory[name]
    print(f"| {name} S={s} | {t['median_round_s']} | {t['median_plain_s']} | "
          f"{t['median_readjust_s'] or '—'} | {t['first_round_s']} | "
          f"{t['median_ratio_to_stock']} | {t['median_cpu_s']} | "
          f"{t['median_cpu_ratio_to_stock']} | {m['python_peak_rss_mb']} | "
          f"{m['worker_peak_rss_mb']} |")


def scale():
  print('| total clients | clients/round | median s/round | CPU s/round | '
        'python RSS MB | worker RSS MB | client GFLOPs sparse | dense |')
  print('|---|---|---|---|---|---|---|---|')
  for total in _SCALE_TOTALS.value:
    for clients in _SCALE_CLIENTS.value:
      row = _spawn(dict(algorithm='feddst', sparsity=0.8, rounds=_ROUNDS.value,
                        clients=int(clients), total_clients=int(total),
                        examples=_SCALE_EXAMPLES.value,
                        epochs=_SCALE_EPOCHS.value))
      _emit(row)
      print(f"| {total} | {clients} | {row['median_round_s']} | "
            f"{row['median_cpu_s']} | {row['python_peak_rss_mb']} | {row['worker_peak_rss_mb']} | "
            f"{row['client_gflops']} | {row['client_dense_gflops']} |",
            flush=True)


def workers_table():
  """FedDST round time with --worker_counts local workers (the mergeable
  context)."""
  print('| workers | median s/round | CPU s/round (all processes) | '
        'python RSS MB |')
  print('|---|---|---|---|')
  for n in map(int, _WORKER_COUNTS.value):
    row = _spawn(dict(algorithm='feddst', sparsity=0.8, rounds=_ROUNDS.value,
                      clients=_CLIENTS.value, examples=_EXAMPLES.value,
                      epochs=_EPOCHS.value, total_clients=400, workers=n))
    _emit(row)
    print(f"| {n} | {row['median_round_s']} | {row['median_cpu_s']} | "
          f"{row['python_peak_rss_mb']} |", flush=True)


def main(argv):
  del argv
  {'compare': compare, 'scale': scale, 'workers': workers_table}[_MODE.value]()


if __name__ == '__main__':
  app.run(main)
