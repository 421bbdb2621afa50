"""Where a tiny FedDST round's time goes, stage by stage.

A round of 2 clients x 20 examples x 1 epoch of the paper CNN is almost all
fixed cost. This times federated computations that run the round's parts
cumulatively on the same state and clients, each ending in one small
reduction of its last result (so nothing large returns to Python):

  0 state in          the state sent to the worker
  1 + distributor     the sparse payload for the clients
  2 + client work     local training, the clients' uploads
  3 + aggregator      the masked sums at the server
  4 + finalizer       the new global weights

and then the whole `next` of the unpacked process (`compose_learning_process`
of the same parts) and of the built one (state masks packed), whose
difference from stage 4 includes the state's way back to Python. Medians over
--repetitions, stages interleaved; the state stays at round 1 (a
non-readjusting round), so every repetition does the same work.

  uv run python experiments/round_stages.py --repetitions=15
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags
import tensorflow as tf
import tensorflow_federated as tff

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import speed_rounds as speed  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_feddst import algorithms  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_feddst import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_feddst import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_feddst.templates import packed_state  # pylint: disable=g-import-not-at-top,wrong-import-position

_REPETITIONS = flags.DEFINE_integer('repetitions', 15, 'Timed repetitions.',
                                    lower_bound=1)
STAGES = ('state in', '+ distributor', '+ client work', '+ aggregator',
          '+ finalizer')


def _one_number(value_type):
  """A TF computation reducing a value to its first tensor's sum."""
  @tff.tensorflow.computation(value_type)
  def first_sum(value):
    return tf.reduce_sum(tf.cast(tf.nest.flatten(value)[0], tf.float32))
  return first_sum


def _at_server(value):
  """A SERVER float32 from a federated value at SERVER or CLIENTS."""
  number = tff.federated_map(_one_number(value.type_signature.member), value)
  if value.type_signature.placement is tff.CLIENTS:
    return tff.federated_sum(number)
  return number


def _stage(parts, state_type, data_type, stage: int):
  """The round up to `stage` (0-4), ending in one number at the server."""
  @tff.federated_computation(state_type, data_type)
  def run(state, data):
    last = state
    if stage >= 1:
      last = parts.distributor.next(state.distributor,
                                    state.global_model_weights).result
    if stage >= 2:
      work = parts.client_work.next(state.client_work, last, data)
      last = work.result.update
    if stage >= 3:
      last = parts.aggregator.next(state.aggregator, work.result.update,
                                   work.result.update_weight).result
    if stage >= 4:
      last = parts.finalizer.next(state.finalizer, state.global_model_weights,
                                  last).result
    return _at_server(last)
  return run


def main(argv):
  del argv
  runtime.own_default_context()
  spec = speed.client_dataset(0, 2).element_spec
  parts = algorithms.build_feddst_components(
      models.mnist_cnn,
      loss_fn=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      input_spec=spec,
      metrics_fn=lambda: [tf.keras.metrics.SparseCategoricalAccuracy()],
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.01,
                                                             momentum=0.9),
      sparsity=0.8, readjustment_ratio=0.05, rounds_between_readjustments=2,
      readjustment_end_round=10_000, client_epochs=1, seed=0)
  unpacked = tff.learning.templates.compose_learning_process(
      parts.initial_model_weights_fn, parts.distributor, parts.client_work,
      parts.aggregator, parts.finalizer)
  packed = packed_state.compose(parts)

  def data(r):
    return [speed.client_dataset(i, 20) for i in (2 * r, 2 * r + 1)]

  state = unpacked.next(unpacked.initialize(), data(0)).state  # Round 1 next.
  packed_st = packed.next(packed.initialize(), data(0)).state
  state_type = unpacked.next.type_signature.parameter[0]
  data_type = unpacked.next.type_signature.parameter[1]
  runs = {name: (lambda d, f=_stage(parts, state_type, data_type, i):
                 f(state, d)) for i, name in enumerate(STAGES)}
  runs['whole next, unpacked state'] = lambda d: unpacked.next(state, d)
  runs['whole next, packed state'] = lambda d: packed.next(packed_st, d)
  times = {name: [] for name in runs}
  for r in range(_REPETITIONS.value + 1):
    for name, run in runs.items():
      start = time.perf_counter()
      run(data(r))
      if r:  # Round 0 traces.
        times[name].append(time.perf_counter() - start)
  previous = 0.0
  print('| part | cumulative s | this part s |\n|---|---|---|')
  for name, ts in times.items():
    median = statistics.median(ts)
    step = median - previous if name in STAGES else float('nan')
    previous = median if name in STAGES else previous
    print(f'| {name} | {median:.4f} | {step:.4f} |')


if __name__ == '__main__':
  app.run(main)
