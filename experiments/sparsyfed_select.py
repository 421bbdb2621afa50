"""SparsyFed's activation pruning: what finding the k-th largest |x| costs.

Every SparsyFed training step finds, for each pruned layer's input, the k-th
largest |x| (a `tf.sort` in `models.powerprop.prune_activations`). This times
ways to find it, swapping `prune_activations` for a copy with each: (a) alone,
on inputs the size of the paper CNN's layers' at batch 32, and (b) inside one
SparsyFed client's training — the powerprop paper CNN (β = 1.25), its initial
kernels globally pruned to S = 0.9, 150 examples × 10 epochs, batch 32, SGD lr
0.01 momentum 0.9, one tf.function, no TFF — interleaved so that noise hits
all alike. `tf.sort`, `tf.math.top_k` and the radix select find the same
threshold; `none` (a constant threshold, not SparsyFed) is the training
without the selection's cost.

  uv run python experiments/sparsyfed_select.py --repetitions=5
"""

import statistics
import time

from absl import app
from absl import flags

_REPETITIONS = flags.DEFINE_integer('repetitions', 5,
                                    'Timed calls per variant.', lower_bound=1)
_EXAMPLES = flags.DEFINE_integer('examples', 150, 'Examples in the client.')
_EPOCHS = flags.DEFINE_integer('epochs', 10, 'Local epochs.')


def main(argv):
  del argv
  from tff_feddst import tf_import  # pylint: disable=g-import-not-at-top
  tf = tf_import.import_tensorflow()
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tff_feddst import models  # pylint: disable=g-import-not-at-top
  from tff_feddst.models import powerprop  # pylint: disable=g-import-not-at-top
  from tff_feddst.sparsity import global_magnitude  # pylint: disable=g-import-not-at-top

  def by_sort(magnitudes, k):
    return tf.sort(magnitudes, direction='DESCENDING')[k - 1]

  def pruning_with(select):
    """`powerprop.prune_activations` with the k-th largest |x| from
    `select`."""
    def prune_activations(x, weight):
      size = int(np.prod(weight.shape.as_list()))
      nnz = tf.math.count_nonzero(weight, dtype=tf.int64)
      magnitude = tf.abs(x)

      def pruned():
        flat = tf.reshape(magnitude, [-1])
        numel = tf.size(flat, out_type=tf.int64)
        k = tf.maximum((nnz * numel + size - 1) // size, 1)
        return tf.where(magnitude >= select(flat, k), x, tf.zeros_like(x))

      return tf.cond(nnz < size, pruned, lambda: tf.identity(x))
    return prune_activations

  library_pruning = powerprop.prune_activations

  def by_top_k(magnitudes, k):
    return tf.math.top_k(magnitudes, tf.cast(k, tf.int32)).values[k - 1]

  def by_radix_select(magnitudes, k):
    """Non-negative floats order as their bit patterns: four passes over
    their bytes, most significant first, each counting one byte's values
    among the entries that share the bytes chosen so far. O(n) a pass."""
    bits = tf.bitcast(magnitudes, tf.int32)
    remaining, prefix = tf.cast(k, tf.int64), tf.constant(0, tf.int32)
    for shift in (24, 16, 8, 0):
      digit = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, shift), 255)
      if shift != 24:
        digit = tf.boolean_mask(digit, tf.equal(
            tf.bitwise.right_shift(bits, shift + 8),
            tf.bitwise.right_shift(prefix, shift + 8)))
      counts = tf.math.bincount(digit, minlength=256, maxlength=256,
                                dtype=tf.int64)
      at_least = tf.cumsum(counts, reverse=True)
      chosen = tf.cast(tf.math.count_nonzero(at_least >= remaining),
                       tf.int32) - 1
      remaining -= at_least[chosen] - counts[chosen]
      prefix = tf.bitwise.bitwise_or(prefix,
                                     tf.bitwise.left_shift(chosen, shift))
    return tf.bitcast(prefix, tf.float32)

  def no_selection(magnitudes, k):
    del magnitudes, k
    return tf.constant(1.0)

  selections = {'tf.sort': by_sort, 'tf.math.top_k': by_top_k,
                'radix select': by_radix_select}
  rng = np.random.default_rng(0)

  # (a) The selection alone, on inputs the size of the paper CNN's layers'.
  print('| layer input (batch 32) | entries | k (density 0.1) | '
        + ' | '.join(f'{name} ms' for name in selections) + ' |')
  print('|---|---|---|' + '---|' * len(selections))
  for name, shape in (('conv2', (32, 14, 14, 32)), ('fc1', (32, 3136)),
                      ('fc2', (32, 512))):
    x = tf.constant(np.abs(rng.standard_normal(shape)).astype(np.float32))
    flat = tf.reshape(x, [-1])
    k = tf.constant(int(flat.shape[0]) // 10, tf.int64)
    times, thresholds = {}, set()
    for label, select in selections.items():
      fn = tf.function(select)
      thresholds.add(float(fn(flat, k)))
      start = time.perf_counter()
      for _ in range(50):
        fn(flat, k).numpy()
      times[label] = (time.perf_counter() - start) / 50 * 1e3
    assert len(thresholds) == 1, thresholds  # All find the same k-th.
    print(f'| {name} {shape} | {flat.shape[0]} | {int(k)} | '
          + ' | '.join(f'{times[n]:.2f}' for n in selections) + ' |')

  # (b) One client's training, each selection in its own traced function.
  images = rng.random((_EXAMPLES.value, 28, 28, 1)).astype(np.float32)
  labels = rng.integers(0, 10, _EXAMPLES.value).astype(np.int32)
  data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def client(select):
    powerprop.prune_activations = pruning_with(select)
    tf.keras.utils.set_random_seed(0)
    model = powerprop.powerprop_model(models.mnist_cnn((28, 28, 1), 10), 1.25)
    # SparsyFed's global magnitude prune of the initial kernels to S = 0.9.
    kernels = [l.kernel for l in powerprop.powerprop_layers(model)]
    total = sum(int(np.prod(k.shape)) for k in kernels)
    masks = global_magnitude.global_magnitude_masks(
        kernels, [tf.ones_like(k) for k in kernels],
        global_magnitude.num_keep(total, 0.9))
    for kernel, mask in zip(kernels, masks):
      kernel.assign(kernel * mask)
    optimizer = tf.keras.optimizers.SGD(0.01, momentum=0.9)

    @tf.function
    def train():
      total = tf.constant(0.0)
      for _ in tf.range(_EPOCHS.value):
        for x, y in data:
          with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
          grads = tape.gradient(loss, model.trainable_variables)
          optimizer.apply_gradients(zip(grads, model.trainable_variables))
          total += loss
      return total

    train()  # Traced now, with this selection.
    return train

  trains = {label: client(select) for label, select in
            {**selections, 'none': no_selection}.items()}
  powerprop.prune_activations = library_pruning
  seconds = {label: [] for label in trains}
  for _ in range(_REPETITIONS.value):
    for label, train in trains.items():
      start = time.process_time()
      train().numpy()
      seconds[label].append(time.process_time() - start)
  print()
  print('| selection | median CPU s per client | all |')
  print('|---|---|---|')
  for label, values in seconds.items():
    print(f'| {label} | {statistics.median(values):.3f} | '
          + ' '.join(f'{v:.3f}' for v in values) + ' |')


if __name__ == '__main__':
  app.run(main)
