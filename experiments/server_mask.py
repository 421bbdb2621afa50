"""The server's re-prune of the union of client masks, timed on the paper CNN.

`sparsity.keep_top_k_lexicographic([in_union, |mean|, votes], live)` over
the four kernels of `models.mnist_cnn`, inside one tf.function, with a union
5% larger than the live count (a readjusting round). Two forms of the union
key:

- `bool`: what the server passes (only the union's positions are sorted);
- `float32`: the same ranking as a float 0/1 key, which sorts every kernel
  entry (31 bits: two packed words here).

  uv run python experiments/server_mask.py --repetitions=30

Prints the median seconds per call for S=0.8 and S=0.95.
"""

import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tff_feddst import models
from tff_feddst import sparsity

_REPETITIONS = flags.DEFINE_integer('repetitions', 30, 'Timed calls.',
                                    lower_bound=1)
_UNION_DTYPES = flags.DEFINE_multi_enum(
    'union_dtype', ['bool', 'float32'], ['bool', 'float32'],
    'Forms of the union key to time.')


def _kernels_inputs(density: float, union_dtype):
  rng = np.random.default_rng(0)
  shapes = [tuple(v.shape) for v in models.mnist_cnn().trainable_weights
            if len(v.shape) > 1]
  inputs = []
  for shape in shapes:
    size = int(np.prod(shape))
    union = rng.random(shape) < density * 1.05
    inputs.append((tf.constant(union.astype(union_dtype)),
                   tf.constant(np.abs(rng.normal(size=shape)), tf.float32),
                   tf.constant(rng.integers(0, 20, shape), tf.float32),
                   int(size * density)))
  return inputs


def _median_seconds(inputs) -> float:
  @tf.function
  def reprune():
    return [sparsity.keep_top_k_lexicographic([u, m, v], k)
            for u, m, v, k in inputs]

  reprune()  # Trace.
  times = []
  for _ in range(_REPETITIONS.value):
    start = time.perf_counter()
    _ = [t.numpy() for t in reprune()]
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv):
  del argv
  print('| sparsity | union key | median s per re-prune |')
  print('|---|---|---|')
  for s in (0.8, 0.95):
    for dtype in _UNION_DTYPES.value:
      seconds = _median_seconds(_kernels_inputs(1.0 - s, np.dtype(dtype)))
      print(f'| {s} | {dtype} | {seconds:.4f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
