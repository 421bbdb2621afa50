"""Round time of a FedDST round with the worker's default intra-op threads
against one thread per op (TF_NUM_INTRAOP_THREADS=1), one child each.

The paper setting on synthetic data: 20 clients × 150 examples × 10 epochs of
the MNIST CNN, S=0.95, α=0.05, batch 32, SGD lr 0.01 momentum 0.9, L2 1e-3.
Configurations alternate (`--repeats` times) so that machine drift hits both.

  uv run python experiments/threads.py --repeats=2 --rounds=5
"""

import collections
import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Rounds per child (the first is '
                               'dropped from the median).', lower_bound=2)
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Alternations.', lower_bound=1)
_CHILD = flags.DEFINE_string('child', None, "Internal: 'default' or N.")


def run_child(threads: int | None, rounds: int) -> dict:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))
  from tff_feddst import tf_import  # pylint: disable=g-import-not-at-top
  tf = tf_import.import_tensorflow()
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from tff_feddst import algorithms, models, runtime  # pylint: disable=g-import-not-at-top,g-multiple-import
  runtime.ensure_runtime(intra_op_threads=threads)
  spec = collections.OrderedDict(
      x=tf.TensorSpec([None, 28, 28, 1], tf.float32),
      y=tf.TensorSpec([None], tf.int32))
  process = algorithms.build_weighted_feddst(
      models.mnist_cnn,
      loss_fn=lambda: tf.keras.losses.SparseCategoricalCrossentropy(
          from_logits=True),
      input_spec=spec,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.01,
                                                             momentum=0.9),
      sparsity=0.95, readjustment_ratio=0.05, client_epochs=10,
      client_weight_decay=1e-3, seed=0)

  def client(i):
    rng = np.random.default_rng(i)
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=rng.random((150, 28, 28, 1), dtype=np.float32),
        y=rng.integers(0, 10, 150).astype(np.int32))).batch(32)

  data = [client(i) for i in range(20)]
  state = process.initialize()
  seconds = []
  for _ in range(rounds):
    start = time.perf_counter()
    state = process.next(state, data).state
    seconds.append(time.perf_counter() - start)
  return dict(threads=threads, rounds=[round(s, 2) for s in seconds],
              median_s=round(statistics.median(seconds[1:]), 2))


def main(argv):
  del argv
  if _CHILD.value:
    threads = None if _CHILD.value == 'default' else int(_CHILD.value)
    print(json.dumps(run_child(threads, _ROUNDS.value)))
    return
  for _ in range(_REPEATS.value):
    for threads in ('default', '1'):
      out = subprocess.run(
          [sys.executable, __file__, f'--child={threads}',
           f'--rounds={_ROUNDS.value}'], check=True, capture_output=True,
          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
      print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == '__main__':
  app.run(main)
