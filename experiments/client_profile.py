"""One client's computation, run in-process: ours against stock TFF's.

Measures CPU seconds per client of (a) stock TFF FedAvg's client update
(`model_delta_client_work.build_model_delta_update_with_tff_optimizer`, the
function `build_weighted_fed_avg` runs on every client), (b) ours at S=0 and
(c) S=0.8, with and without readjustment — the paper CNN, 150 examples,
10 epochs, batch 32, SGD lr 0.01 momentum 0.9. The calls are interleaved so
that machine noise hits all alike. No TFF worker is in between, so this
isolates the client computation from the executor.

  uv run python experiments/client_profile.py --repetitions=6

Uses the masked-training core of templates/client_work.py directly.
"""

import collections
import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.learning import loop_builder
from tensorflow_federated.python.learning.templates import model_delta_client_work

from tff_feddst import models
from tff_feddst.sparse import codec
from tff_feddst.templates import client_work
from tff_feddst.templates import hooks
from tff_feddst.sparse import layout as layout_lib

_REPETITIONS = flags.DEFINE_integer('repetitions', 6, 'Calls per variant.',
                                    lower_bound=1)
_EXAMPLES = flags.DEFINE_integer('examples', 150, 'Examples in the client.')
_EPOCHS = flags.DEFINE_integer('epochs', 10, 'Local epochs.')

LOOP = tff.learning.LoopImplementation.DATASET_ITERATOR


def _dataset():
  rng = np.random.default_rng(0)
  x = rng.random((_EXAMPLES.value, 28, 28, 1), dtype=np.float32)
  y = rng.integers(0, 10, _EXAMPLES.value).astype(np.int32)
  return tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x, y=y)).batch(32)


def _loss():
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _optimizer():
  return tff.learning.optimizers.build_sgdm(0.01, momentum=0.9)


def stock_client(data):
  """Stock FedAvg's client function with its initial weights."""
  spec = data.element_spec

  def model_fn():
    return tff.learning.models.from_keras_model(
        models.mnist_cnn(), loss=_loss(), input_spec=spec,
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])

  update = model_delta_client_work.build_model_delta_update_with_tff_optimizer(
      model_fn, weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
      loop_implementation=LOOP)
  weights = tff.learning.models.ModelWeights.from_model(model_fn())
  weights = tf.nest.map_structure(lambda v: v.numpy(), weights)
  optimizer = _optimizer()
  repeated = data.repeat(_EPOCHS.value)
  return lambda readjust: update(optimizer, weights, repeated)


def our_client(data, sparsity):
  """Our client function with the sparse payload of a fresh model."""
  spec = data.element_spec
  tf.keras.utils.set_random_seed(0)
  initial = models.make_prunable(models.mnist_cnn())
  models.apply_initial_masks(initial, sparsity, 'feddst_erk')
  layout = layout_lib.build_layout(initial, sparsity, 'feddst_erk')
  kernels, masks, dense = layout.split(initial.trainable_weights,
                                       initial.non_trainable_weights)
  payload = codec.encode([v.numpy() for v in kernels],
                            [v.numpy() for v in masks],
                            [v.numpy() for v in dense], send_masks=True)

  def models_fn():
    plain = models.mnist_cnn()
    wrapped = models.make_prunable(plain, log=False)
    return wrapped, tff.learning.models.from_keras_model(
        plain, loss=_loss(), input_spec=spec,
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])

  update = client_work.MaskedTrainer(
      models_fn, layout, _optimizer(),
      client_work.LocalTrainingConfig(epochs=_EPOCHS.value),
      (hooks.FedDSTReadjustment(fraction=0.05, rounds_between=2,
                                end_round=100),),
      loop_builder.build_training_loop(LOOP)).client_update
  fraction = tf.constant(0.05)
  return lambda readjust: update(payload, data, fraction,
                                 tf.constant(readjust))


def main(argv):
  del argv
  data = _dataset()
  variants = {
      'stock_fedavg': (stock_client(data), (False,)),
      'ours S=0': (our_client(data, 0.0), (False,)),
      'ours S=0.8': (our_client(data, 0.8), (False, True)),
  }
  for fn, flags_ in variants.values():  # Trace.
    for readjust in flags_:
      fn(readjust)
  cpu = collections.defaultdict(list)
  for _ in range(_REPETITIONS.value):
    for name, (fn, flags_) in variants.items():
      for readjust in flags_:
        start = time.process_time()
        fn(readjust)
        cpu[(name, readjust)].append(time.process_time() - start)
  stock = cpu[('stock_fedavg', False)]
  print('| client function | readjusting | median CPU-s per client | '
        'median ratio to stock |')
  print('|---|---|---|---|')
  for (name, readjust), values in cpu.items():
    ratio = statistics.median(v / s for v, s in zip(values, stock))
    print(f'| {name} | {readjust} | {statistics.median(values):.3f} | '
          f'{ratio:.3f} |')


if __name__ == '__main__':
  app.run(main)
