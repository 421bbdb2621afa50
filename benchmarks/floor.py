"""The hardware floor: the fastest plain TF does one client's work here.

One client of the paper setting — the MNIST/Fashion-MNIST CNN
(`models.mnist_cnn`), 150 examples × 10 local epochs, batch 32, SGD lr 0.01
momentum 0.9 — in plain TensorFlow, no TFF, no masks: the denominator for
every round time in docs/performance.md. Each configuration runs in its own
child process (TF's thread pools are fixed at start-up):

- `graph`: the whole local training (data loop included) in one tf.function;
- `xla`: the same loop, each step a `tf.function(jit_compile=True)`;
- each with 1 and 2 intra-op threads.

  uv run python benchmarks/floor.py --repetitions=10

FLOPs: 3 × 2 × (multiply-adds of conv/dense layers per example) × examples
processed (forward + backward ≈ 3 forward passes); the same count the client
work reports as `client_dense_flops`.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

_REPETITIONS = flags.DEFINE_integer('repetitions', 10,
                                    'Timed clients per configuration.',
                                    lower_bound=1)
_EXAMPLES = flags.DEFINE_integer('examples', 150, 'Examples in the client.')
_EPOCHS = flags.DEFINE_integer('epochs', 10, 'Local epochs.')
_CHILD = flags.DEFINE_string('child', None,
                             'Internal: run one configuration, print JSON.')

CONFIGS = [('graph', 1), ('graph', 2), ('xla', 1), ('xla', 2)]
_CONFIGS = flags.DEFINE_list(
    'configs', [f'{m}:{t}' for m, t in CONFIGS],
    'The rows to measure, as mode:threads (mode graph or xla).')


def model_macs(model) -> int:
  """Multiply-adds per example of the Conv2D/Dense kernels."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  total = 0
  for layer in model.layers:
    kernel = getattr(layer, 'kernel', None)
    if kernel is None:
      continue
    positions = int(np.prod(layer.output_shape[1:-1])) if len(
        layer.output_shape) > 2 else 1
    total += int(np.prod(kernel.shape)) * positions
  return total


def run_child(mode: str, threads: int, repetitions: int, examples: int,
              epochs: int) -> dict:
  """Times one configuration in this process; returns a JSON-able dict."""
  from tff_feddst import tf_import  # pylint: disable=g-import-not-at-top
  tf = tf_import.import_tensorflow()
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tff_feddst import models  # pylint: disable=g-import-not-at-top

  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)
  rng = np.random.default_rng(0)
  x = rng.random((examples, 28, 28, 1), dtype=np.float32)
  y = rng.integers(0, 10, examples).astype(np.int32)
  data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat(epochs)
  model = models.mnist_cnn()
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  weights = model.trainable_variables
  velocity = [tf.Variable(tf.zeros_like(w)) for w in weights]

  def step(bx, by):
    with tf.GradientTape() as tape:
      loss = loss_fn(by, model(bx, training=True))
    grads = tape.gradient(loss, weights)
    for w, v, g in zip(weights, velocity, grads):
      v.assign(0.9 * v + g)
      w.assign_sub(0.01 * v)
    return loss

  compiled_step = tf.function(step, jit_compile=(mode == 'xla'))

  @tf.function
  def client():
    total = tf.constant(0.0)
    for bx, by in data:
      total += compiled_step(bx, by)
    return total

  client()  # Trace and compile.
  seconds = []
  for _ in range(repetitions):
    start = time.perf_counter()
    client().numpy()
    seconds.append(time.perf_counter() - start)
  flops = 3 * 2 * model_macs(model) * examples * epochs
  best = min(seconds)
  median = statistics.median(seconds)
  return dict(mode=mode, threads=threads, median_s=round(median, 4),
              best_s=round(best, 4), gflop=round(flops / 1e9, 2),
              median_gflops=round(flops / median / 1e9, 1),
              best_gflops=round(flops / best / 1e9, 1))


def main(argv):
  del argv
  if _CHILD.value:
    mode, threads = _CHILD.value.split(':')
    result = run_child(mode, int(threads), _REPETITIONS.value,
                       _EXAMPLES.value, _EPOCHS.value)
    print(json.dumps(result))
    return
  rows = []
  configs = [tuple(c.split(':')) for c in _CONFIGS.value]
  for mode, threads in configs:
    if mode not in ('graph', 'xla') or not threads.isdigit():
      raise app.UsageError(f'--configs: {mode}:{threads} is not mode:threads '
                           'with mode graph or xla.')
  for mode, threads in configs:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    out = subprocess.run(
        [sys.executable, __file__, f'--child={mode}:{threads}',
         f'--repetitions={_REPETITIONS.value}',
         f'--examples={_EXAMPLES.value}', f'--epochs={_EPOCHS.value}'],
        check=True, capture_output=True, text=True, env=env)
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps(rows[-1]), flush=True)
  print('\n| mode | intra-op threads | median s/client | best s | GFLOP |'
        ' GFLOP/s (median) | GFLOP/s (best) |')
  print('|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['mode']} | {r['threads']} | {r['median_s']} | {r['best_s']} |"
          f" {r['gflop']} | {r['median_gflops']} | {r['best_gflops']} |")


if __name__ == '__main__':
  app.run(main)
