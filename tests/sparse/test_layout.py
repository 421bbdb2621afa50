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
  kernels, masks, dense = layout.split(trainable, non_trainable)
  assert [k.shape for k in kernels] == [(3, 3, 1, 4), (144, 3)]
  assert [m.sum() for m in masks] == list(layout.live_counts)
  # Biases, BN gamma/beta, then BN moving mean/variance.
  assert len(dense) == 2 + 2 + 2
  assert len(layout.bookkeeping_index) > 0
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
