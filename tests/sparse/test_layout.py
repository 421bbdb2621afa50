"""ModelLayout: where kernels, masks, dense params and bookkeeping sit."""

import numpy as np
import tensorflow as tf

from tff_feddst import models
from tff_feddst.sparse import layout as layout_lib


def test_split_merge_round_trip_on_a_cnn_with_batch_norm():
  plain = tf.keras.Sequential([
      tf.keras.layers.InputLayer((8, 8, 1)),
      tf.keras.layers.Conv2D(4, 3),
      tf.keras.layers.BatchNormalization(),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(3)])
  model = models.make_prunable(plain, log=False)
  models.apply_initial_masks(model, 0.5, 'uniform')
  layout = layout_lib.build_layout(model, 0.5, 'uniform')
  trainable = [v.numpy() for v in model.trainable_weights]
  non_trainable = [v.numpy() for v in model.non_trainable_weights]
  # Each piece found where Keras and TF-MOT put it, by variable name.
  name = lambda weights, i: weights[i].name.split('/')[-1].split(':')[0]
  tw, nw = model.trainable_weights, model.non_trainable_weights
  assert layout.kernel_index == (0, 4)
  assert [name(tw, i) for i in layout.kernel_index] == ['kernel', 'kernel']
  assert layout.mask_index == (0, 5)
  assert [name(nw, i) for i in layout.mask_index] == ['mask', 'mask']
  assert [name(tw, i) for i in layout.dense_trainable_index] == [
      'bias', 'gamma', 'beta', 'bias']
  assert [name(nw, i) for i in layout.dense_non_trainable_index] == [
      'moving_mean', 'moving_variance']
  assert [name(nw, i) for i in layout.bookkeeping_index] == [
      'threshold', 'pruning_step', 'threshold', 'pruning_step']
  # S = 0.5 uniform: half of 36 and of 432 weights; conv output 6x6.
  assert layout.live_counts == (18, 216)
  assert layout.output_positions == (36, 1)
  kernels, masks, dense = layout.split(trainable, non_trainable)
  assert [k.shape for k in kernels] == [(3, 3, 1, 4), (144, 3)]
  assert [m.sum() for m in masks] == [18, 216]
  # Biases, BN gamma/beta, then BN moving mean/variance.
  assert [d.shape for d in dense] == [(4,), (4,), (4,), (3,), (4,), (4,)]
  np.testing.assert_array_equal(dense[4], non_trainable[3])  # moving mean
  bookkeeping = [non_trainable[i] for i in layout.bookkeeping_index]
  t2, n2 = layout.merge(kernels, masks, dense, bookkeeping)
  for a, b in zip(t2, trainable):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(n2, non_trainable):
    np.testing.assert_array_equal(a, b)
  # Without bookkeeping it is reset to zeros (TF-MOT's pruning_step = 0).
  _, n3 = layout.merge(kernels, masks, dense)
  for i in layout.bookkeeping_index:
    assert not np.any(np.asarray(n3[i]))
