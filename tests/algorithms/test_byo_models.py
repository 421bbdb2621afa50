"""Bring-your-own Keras models, and a round split across two TFF workers."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst import models
from tff_feddst import runtime

L = tf.keras.layers


def vision_model():
  inputs = tf.keras.Input((8, 8, 3))
  h = L.Conv2D(8, 3, padding='same', activation='relu')(inputs)
  h = L.BatchNormalization()(h)
  h = L.DepthwiseConv2D(3, padding='same', activation='relu')(h)
  h = L.GlobalAveragePooling2D()(h)
  outputs = L.Dense(3)(L.Dense(16, activation='relu')(h))
  return tf.keras.Model(inputs, outputs)


def text_model():
  return tf.keras.Sequential([
      L.Input((12,), dtype=tf.int32), L.Embedding(50, 8),
      L.GlobalAveragePooling1D(), L.Dense(3)])


def datasets(kind, n_clients=3, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n_clients):
    y = rng.integers(0, 3, 24).astype(np.int32)
    if kind == 'vision':
      x = (rng.normal(size=(24, 8, 8, 3)) + y[:, None, None, None]).astype(
          np.float32)
    else:
      x = (rng.integers(0, 16, (24, 12)) + 16 * y[:, None]).astype(np.int32)
    out.append(tf.data.Dataset.from_tensor_slices(
        collections.OrderedDict(x=x, y=y)).batch(8))
  return out


def build(model_fn, data, **kwargs):
  return algorithms.build_weighted_feddst(
      model_fn,
      loss_fn=lambda: tf.keras.losses.SparseCategoricalCrossentropy(
          from_logits=True),
      input_spec=data[0].element_spec,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.05),
      sparsity=0.5, sparsity_distribution='uniform', readjustment_ratio=0.2,
      rounds_between_readjustments=1, readjustment_end_round=10, seed=0,
      **kwargs)


@pytest.mark.parametrize('kind, model_fn, masked', [
    # Conv2D and both Dense kernels; not BatchNorm nor the depthwise kernel.
    ('vision', vision_model, [(3, 3, 3, 8), (8, 16), (16, 3)]),
    ('text', text_model, [(50, 8), (8, 3)]),
])
def test_byo_model_trains_with_exact_masks(kind, model_fn, masked):
  data = datasets(kind)
  parts = algorithms.build_feddst_components(
      model_fn,
      loss_fn=lambda: tf.keras.losses.SparseCategoricalCrossentropy(
          from_logits=True),
      input_spec=data[0].element_spec,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.05),
      sparsity=0.5, sparsity_distribution='uniform', readjustment_ratio=0.2)
  layout = parts.layout
  assert list(layout.kernel_shapes) == masked
  process = build(model_fn, data)
  state = process.initialize()
  before = process.get_model_weights(state)
  for _ in range(2):
    out = process.next(state, data)
    state = out.state
  weights = process.get_model_weights(state)
  trainable = [np.asarray(w) for w in weights.trainable]
  non_trainable = [np.asarray(w) for w in weights.non_trainable]
  kernels, masks, dense = layout.split(trainable, non_trainable)
  for k, m, n in zip(kernels, masks, layout.live_counts):
    assert m.sum() == n and np.all(k[m == 0] == 0)
  # Unmasked parameters (biases, BN, depthwise kernels) are averaged densely
  # and have moved.
  _, _, dense_before = layout.split([np.asarray(w) for w in before.trainable],
                                    [np.asarray(w) for w in before.non_trainable])
  assert all(np.all(np.isfinite(d)) for d in dense)
  assert any(not np.allclose(a, b) for a, b in zip(dense, dense_before))
  if kind == 'vision':
    # BN moving statistics are model state: averaged, not left at init.
    assert len(layout.dense_non_trainable_index) == 2
  plain = models.keras_model_from_weights(model_fn, weights)
  x = next(iter(data[0]))['x']
  assert plain(x).shape == (8, 3)


def two_rounds(process, state, data):
  metrics = []
  for _ in range(2):
    out = process.next(state, data)
    state = out.state
    metrics.append(out.metrics)
  return state, metrics


def test_round_across_two_workers_equals_one_worker():
  data = datasets('vision', n_clients=4)
  process = build(vision_model, data)
  state0 = process.initialize()
  single, outs_single = two_rounds(process, state0, data)
  workers = [runtime.LocalWorker.start() for _ in range(2)]
  try:
    with runtime.Runtime([w.address for w in workers]):
      multi, outs_multi = two_rounds(process, state0, data)
  finally:
    for w in workers:
      w.stop()
    runtime.ensure_runtime()
  a = process.get_model_weights(single)
  b = process.get_model_weights(multi)
  for x, y in zip(list(a.trainable) + list(a.non_trainable),
                  list(b.trainable) + list(b.non_trainable)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  for m1, m2 in zip(outs_single, outs_multi):
    for key in ('uplink_bytes', 'downlink_bytes', 'mask_hamming_mean',
                'clients', 'examples'):
      assert m1['client_work']['round'][key] == m2['client_work']['round'][key]
