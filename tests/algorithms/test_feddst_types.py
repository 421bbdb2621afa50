"""Type signatures of the FedDST pieces (no execution), as in tff.learning."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst import models

SPEC = collections.OrderedDict(
    x=tf.TensorSpec([None, 8, 8, 1], tf.float32),
    y=tf.TensorSpec([None], tf.int32))


def build(**overrides):
  kwargs = dict(
      loss_fn=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      input_spec=SPEC,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.01),
      sparsity=0.8, readjustment_ratio=0.05)
  kwargs.update(overrides)
  return algorithms.build_feddst_components(
      lambda: models.mlp((8, 8, 1), 10, 16), **kwargs)


def test_learning_process_signature():
  process = algorithms.build_weighted_feddst(
      lambda: models.mlp((8, 8, 1), 10, 16),
      loss_fn=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      input_spec=SPEC,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.01),
      sparsity=0.8, readjustment_ratio=0.05)
  assert isinstance(process, tff.learning.templates.LearningProcess)
  state_type = process.initialize.type_signature.result
  assert state_type.placement is tff.SERVER
  data_type = process.next.type_signature.parameter[1]
  assert data_type.placement is tff.CLIENTS
  assert isinstance(data_type.member, tff.SequenceType)
  weights_type = process.get_model_weights.type_signature.result
  # Weights carry TF-MOT's masks among the non-trainable variables.
  assert len(weights_type.non_trainable) == 2 * 3  # mask, threshold, step x2


def test_uplink_is_variable_length_values_and_packed_bits():
  parts = build()
  update = parts.client_work.next.type_signature.result.result.member.update
  for t in update.values:
    assert t.dtype == np.float32 and t.shape == (None,)
  for t in update.masks:
    assert t.dtype == np.uint8 and t.shape == (None,)
  downlink = parts.distributor.next.type_signature.result.result
  assert downlink.placement is tff.CLIENTS
  assert downlink.member.values == update.values


def test_aggregator_is_weighted_and_reports_to_server():
  parts = build()
  assert parts.aggregator.is_weighted
  sums = parts.aggregator.next.type_signature.result.result
  assert sums.placement is tff.SERVER
  # Empty until a client that sent a mask is added, then kernel-sized.
  for field in ('kernel_sums', 'vote_weights', 'vote_counts'):
    assert [t.shape for t in getattr(sums.member, field)] == [(None,)] * 2
  assert [t.shape for t in sums.member.fixed_sums] == [
      (n,) for n in parts.layout.live_counts]


def test_finalizer_state_holds_rounds_initial_mask_and_optimizer():
  parts = build()
  plain = parts.finalizer.initialize.type_signature.result.member
  assert len(plain.optimizer) == 0
  assert plain.round_num.dtype == np.int64
  # The round-0 masks, 8 weights per byte.
  assert [(t.dtype, t.shape) for t in plain.initial_masks] == [
      (np.uint8, (-(-n // 8),)) for n in parts.layout.kernel_sizes]
  with_momentum = build(server_optimizer_fn=tff.learning.optimizers.build_sgdm(
      1.0, momentum=0.9)).finalizer.initialize.type_signature.result.member
  assert 'accumulator' in str(with_momentum.optimizer)


@pytest.mark.parametrize('overrides, match', [
    (dict(sparsity=1.0), 'sparsity must be in'),
    (dict(readjustment_ratio=-0.1), 'readjustment_ratio'),
    (dict(rounds_between_readjustments=0), 'rounds_between_readjustments'),
    (dict(sparsity_distribution='dense'), 'sparsity_distribution'),
    (dict(readjustment_schedule='linear'), 'schedule'),
    (dict(prox_mu=-1.0), 'prox_mu'),
    (dict(input_spec=collections.OrderedDict(
        x=tf.TensorSpec([8, 8, 1], tf.float32),
        y=tf.TensorSpec([], tf.int32))), 'input_spec looks unbatched'),
])
def test_bad_arguments_are_named(overrides, match):
  with pytest.raises(ValueError, match=match):
    build(**overrides)


def test_keras_optimizer_is_rejected_with_advice():
  with pytest.raises(TypeError, match='tff.learning.optimizers'):
    build(client_optimizer_fn=lambda: tf.keras.optimizers.SGD(0.1))
