"""The packed-state wrapper: the same rounds as the unpacked process, a
smaller state (masks 8 weights a byte), and weights/hparams that pass
through unchanged."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst import models
from tff_feddst.templates import packed_state

SPEC = collections.OrderedDict(
    x=tf.TensorSpec([None, 8, 8, 1], tf.float32),
    y=tf.TensorSpec([None], tf.int32))


def _data(seed, clients=3):
  rng = np.random.default_rng(seed)
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=rng.random((12, 8, 8, 1), dtype=np.float32),
      y=rng.integers(0, 10, 12).astype(np.int32))).batch(4)
          for _ in range(clients)]


@pytest.fixture(scope='module')
def processes():
  parts = algorithms.build_feddst_components(
      lambda: models.mlp((8, 8, 1), 10, 16),
      loss_fn=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      input_spec=SPEC,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
      # Every round readjusts, so masks change and the packing is exercised.
      sparsity=0.8, readjustment_ratio=0.2, rounds_between_readjustments=1,
      readjustment_end_round=100, seed=1)
  unpacked = tff.learning.templates.compose_learning_process(
      parts.initial_model_weights_fn, parts.distributor, parts.client_work,
      parts.aggregator, parts.finalizer)
  return parts.layout, unpacked, packed_state.compose(parts)


def _flat(structure):
  return [np.asarray(t) for t in tf.nest.flatten(structure)]


def _assert_same(a, b):
  a, b = _flat(a), _flat(b)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_rounds_equal_the_unpacked_process(processes):
  layout, unpacked, packed = processes
  plain_state, packed_st = unpacked.initialize(), packed.initialize()
  moved = 0
  for r in range(3):
    before = unpacked.get_model_weights(plain_state).non_trainable
    plain_out = unpacked.next(plain_state, _data(r))
    packed_out = packed.next(packed_st, _data(r))
    plain_state, packed_st = plain_out.state, packed_out.state
    _assert_same(unpacked.get_model_weights(plain_state),
                 packed.get_model_weights(packed_st))
    _assert_same(unpacked.get_model_weights(plain_state),
                 packed_state.unpacked_model_weights(packed_st, layout))
    _assert_same(plain_out.metrics, packed_out.metrics)
    after = unpacked.get_model_weights(plain_state).non_trainable
    moved += sum(int(np.sum(before[i] != after[i])) for i in layout.mask_index)
  assert moved > 0  # The masks changed, so packing them was tested.
  # Everything but the masks is the unpacked state's, untouched.
  for i, (p, u) in enumerate(zip(_flat(packed_st), _flat(plain_state))):
    if p.dtype != np.uint8:
      np.testing.assert_array_equal(p, u, err_msg=f'state array {i}')


def test_state_holds_the_masks_eight_a_byte(processes):
  layout, unpacked, packed = processes
  weights = packed.initialize().global_model_weights
  for i, n in zip(layout.mask_index, layout.kernel_sizes):
    assert weights.non_trainable[i].dtype == np.uint8
    assert weights.non_trainable[i].shape == (-(-n // 8),)
  size = lambda s: sum(a.nbytes for a in _flat(s))
  mask_bytes = sum(4 * n - (-(-n // 8)) for n in layout.kernel_sizes)
  assert size(unpacked.initialize()) - size(packed.initialize()) == mask_bytes


def test_set_model_weights_and_hparams_pass_through(processes):
  layout, unpacked, packed = processes
  state = packed.next(packed.initialize(), _data(7)).state
  weights = packed.get_model_weights(state)
  _assert_same(packed.set_model_weights(state, weights), state)
  # New weights with another mask come back as they were set.
  initial = unpacked.get_model_weights(unpacked.initialize())
  mask = np.zeros_like(initial.non_trainable[layout.mask_index[0]])
  mask.flat[::3] = 1.0
  other = tff.learning.models.ModelWeights(
      [np.asarray(w) for w in initial.trainable],
      [mask if i == layout.mask_index[0] else np.asarray(w)
       for i, w in enumerate(initial.non_trainable)])
  _assert_same(packed.get_model_weights(packed.set_model_weights(state, other)),
               other)
  hparams = packed.get_hparams(state)
  _assert_same(hparams, unpacked.get_hparams(unpacked.initialize()))
  _assert_same(packed.set_hparams(state, hparams), state)
