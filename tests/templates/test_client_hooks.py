"""The hook protocol of the masked client work: a toy hook is called at the
documented points, in order, and what it does there reaches the upload and
the measurements."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst import models
from tff_feddst.algorithms import skeleton
from tff_feddst.sparse import codec
from tff_feddst.templates import client_work
from tff_feddst.templates import hooks

EPOCHS, BATCHES, ROUND = 2, 3, 3


def model_fn():
  return models.mlp((4, 4, 1), 3, hidden=6)


def loss_fn():
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def dataset(seed):
  rng = np.random.default_rng(seed)
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=rng.normal(size=(4 * BATCHES, 4, 4, 1)).astype(np.float32),
      y=rng.integers(0, 3, 4 * BATCHES).astype(np.int32))).batch(4)


def build_parts():
  return algorithms.build_feddst_components(
      model_fn, loss_fn=loss_fn, input_spec=dataset(0).element_spec,
      sparsity=0.5, readjustment_ratio=0.0, seed=1,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1))


def work_with(parts, client_hooks, epochs=EPOCHS):
  """The masked client work of `parts`' model with `client_hooks`."""
  spec = dataset(0).element_spec
  return client_work.build_masked_client_work(
      skeleton.training_models_fn(model_fn, loss_fn=loss_fn, input_spec=spec,
                                  metrics_fn=None),
      parts.layout, parts.distributor.next.type_signature.result.result.member,
      tff.SequenceType(tff.types.tensorflow_to_type(spec)),
      optimizer=tff.learning.optimizers.build_sgdm(0.1),
      training=client_work.LocalTrainingConfig(epochs=epochs),
      hooks=client_hooks)


class RecordingHook(hooks.ClientHook):
  """Records where it is called; at round r its rate is r + 0.5. Before the
  first batch of the second epoch it empties the first kernel's mask."""

  def __init__(self):
    self.calls = []

  def _call(self, name):
    if name not in self.calls:
      self.calls.append(name)

  def data_type(self, data_type):
    self._call('data_type')
    return data_type

  def schedule(self, round_num):
    self._call('schedule')
    return tf.cast(round_num, tf.float32) + 0.5, tf.constant(True)

  def gradient_memory(self, trainer):
    self._call('gradient_memory')
    return None

  def split_data(self, data, client_round):
    self._call('split_data')
    return data

  def after_decode(self, trainer, client_round):
    self._call('after_decode')

  def has_epoch_events(self, epochs):
    return True

  def initial_event_state(self):
    return tf.constant(False)

  def before_batch(self, trainer, client_round, epoch, emptied, memory_state):
    self._call('before_batch')

    def empty_first_kernel():
      trainer.set_masks([tf.zeros_like(trainer.mask_vars[0])] +
                        [tf.identity(m) for m in trainer.mask_vars[1:]])
      return tf.constant(True)

    return tf.cond(tf.logical_and(epoch >= 1, tf.logical_not(emptied)),
                   empty_first_kernel, lambda: emptied)

  def after_training(self, trainer, client_round):
    self._call('after_training')

  def upload(self, trainer, client_round, payload):
    self._call('upload')
    return payload

  def client_stats(self, trainer, client_round, stats):
    self._call('client_stats')
    return {'toy_rate': tf.cast(client_round.rate, tf.float64)}

  def round_measurements(self, stats, clients, layout):
    self._call('round_measurements')
    return {'toy_rate_mean': stats['toy_rate'] / clients}


def test_a_toy_hook_is_called_at_its_points_and_acts_there():
  parts = build_parts()
  hook = RecordingHook()
  work = work_with(parts, (hook,))
  # Building traces every computation: the client's round first, then the
  # server's schedule and measurements.
  assert hook.calls == ['data_type', 'gradient_memory', 'split_data',
                        'after_decode', 'before_batch', 'after_training',
                        'upload', 'client_stats', 'schedule',
                        'round_measurements']

  weights = parts.initial_model_weights_fn()
  kernels, masks, dense = parts.layout.split(
      [np.asarray(w) for w in weights.trainable],
      [np.asarray(w) for w in weights.non_trainable])
  payload = tf.nest.map_structure(np.asarray, codec.encode(
      kernels, masks, dense, send_masks=True))
  state = work.initialize()
  state['round_num'] = ROUND
  out = work.next(state, [payload] * 2, [dataset(1), dataset(2)])
  round_metrics = out.measurements['round']
  assert round_metrics['toy_rate_mean'] == ROUND + 0.5
  assert round_metrics['readjusted']
  assert round_metrics['readjustment_fraction'] == np.float32(ROUND + 0.5)
  assert round_metrics['examples'] == 2 * EPOCHS * BATCHES * 4
  # The first kernel's mask went empty mid-round: no values of it travel,
  # its mask bits do, and the re-mask kept its weights at 0.
  first_live = int(np.sum(masks[0] > 0))
  assert first_live > 0
  assert round_metrics['mask_hamming_mean'] == first_live
  for result in out.result:
    assert np.size(result.update.values[0]) == 0
    assert np.size(result.update.masks[0]) == (masks[0].size + 7) // 8
    np.testing.assert_array_equal(
        codec.unpack_bits(result.update.masks[0], masks[0].size).numpy(),
        np.zeros(masks[0].size, bool))
    np.testing.assert_array_equal(result.update.values[1].size,
                                  int(np.sum(masks[1] > 0)))


def test_two_hooks_with_a_schedule_are_refused():
  with pytest.raises(ValueError, match='At most one client hook may have a '
                     r"schedule; got \['RecordingHook', 'FedDSTReadjustment'\]"):
    work_with(build_parts(),
              (RecordingHook(), hooks.FedDSTReadjustment(fraction=0.1)))
