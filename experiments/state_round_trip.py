"""What a round's state costs to move: stock TFF FedAvg against FedDST.

Every `process.next` sends the whole state from Python to the TFF worker and
back. For tiny rounds (2 clients x 20 examples x 1 epoch, the paper CNN) this
prints, per process: the state's bytes, the median seconds of a federated
computation that only returns the state (the round trip alone), and the
median wall and Python-process CPU seconds of a round (the CPU includes
TFF's serialization threads in this process).

  uv run python experiments/state_round_trip.py --repetitions=20
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import speed_rounds as speed  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_feddst import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position

_REPETITIONS = flags.DEFINE_integer(
    'repetitions', 20, 'Measured rounds (and round trips) per process.',
    lower_bound=1)


def _measure(name: str, sparsity: float) -> dict:
  spec = speed.client_dataset(0, 2).element_spec
  process = speed.build_process(
      dict(algorithm=name, sparsity=sparsity, epochs=1), spec)
  state = process.initialize()

  @tff.federated_computation(process.next.type_signature.parameter[0])
  def echo(value):
    return value

  def data(r):
    return [speed.client_dataset(i, 20) for i in (2 * r, 2 * r + 1)]

  echo(state)
  state = process.next(state, data(0)).state  # Trace.
  echoes, walls, cpus = [], [], []
  for r in range(1, _REPETITIONS.value + 1):
    start = time.perf_counter()
    echo(state)
    echoes.append(time.perf_counter() - start)
    start, cpu = time.perf_counter(), time.process_time()
    state = process.next(state, data(r)).state
    walls.append(time.perf_counter() - start)
    cpus.append(time.process_time() - cpu)
  return dict(
      process=f'{name} S={sparsity}',
      state_mb=sum(np.asarray(x).nbytes for x in tf.nest.flatten(state)) / 1e6,
      echo_s=statistics.median(echoes), round_s=statistics.median(walls),
      python_cpu_s=statistics.median(cpus))


def main(argv):
  del argv
  runtime.ensure_runtime()
  print('| process | state MB | state round trip s | round s | Python CPU s '
        'per round |')
  print('|---|---|---|---|---|')
  for name, sparsity in (('stock_fedavg', 0.0), ('feddst', 0.8)):
    row = _measure(name, sparsity)
    print(f"| {row['process']} | {row['state_mb']:.2f} | {row['echo_s']:.4f} "
          f"| {row['round_s']:.4f} | {row['python_cpu_s']:.4f} |", flush=True)
  runtime.shutdown()


if __name__ == '__main__':
  app.run(main)
