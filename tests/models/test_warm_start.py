"""Warm start: the run starts from given weights, masked by their magnitude."""

import numpy as np
import pytest
import tensorflow as tf

from tff_feddst import algorithms
from tff_feddst import models
from tff_feddst import sparsity


def model_fn(hidden=12):
  return models.mlp((6, 6, 1), 4, hidden=hidden)


def trained_like(seed=0, hidden=12):
  """A 'trained' model: weights far from any random init."""
  model = model_fn(hidden)
  rng = np.random.default_rng(seed)
  model.set_weights([rng.normal(size=w.shape).astype(np.float32)
                     for w in model.get_weights()])
  return model


def build(initial_weights, s=0.7):
  spec = {'x': tf.TensorSpec([None, 6, 6, 1], tf.float32),
          'y': tf.TensorSpec([None], tf.int32)}
  return algorithms.build_feddst_components(
      model_fn, loss_fn=tf.keras.losses.SparseCategoricalCrossentropy,
      input_spec=spec, client_optimizer_fn=lambda: __import__(
          'tensorflow_federated').learning.optimizers.build_sgdm(0.1),
      sparsity=s, sparsity_distribution='uniform', readjustment_ratio=0.0,
      initial_weights=initial_weights, seed=0)


@pytest.mark.parametrize('as_arrays', [False, True])
def test_initial_weights_and_magnitude_masks_come_from_the_given_model(
    as_arrays):
  source = trained_like()
  # Read first: building a process traces Keras models in graph mode, which
  # swaps Keras' Sequential class to its v1 bases until the next eager model
  # is built (Keras' version_utils.swap_class), breaking `get_weights` on
  # existing instances meanwhile.
  src = source.get_weights()  # fc1 kernel, fc1 bias, fc2 kernel, fc2 bias
  parts = build(src if as_arrays else source)
  weights = parts.initial_model_weights_fn()
  kernels, masks, dense = parts.layout.split(list(weights.trainable),
                                             list(weights.non_trainable))
  for k, m, w, n in zip(kernels, masks, [src[0], src[2]],
                        parts.layout.live_counts):
    want = sparsity.prune_by_magnitude(w, np.ones_like(w), n).numpy()
    np.testing.assert_array_equal(m, want)
    np.testing.assert_array_equal(k, w * want)
  np.testing.assert_array_equal(dense[0], src[1])
  np.testing.assert_array_equal(dense[1], src[3])


def test_a_model_of_another_shape_is_refused_naming_the_first_mismatch():
  with pytest.raises(models.IncompatibleModelError,
                     match=r'fc1/kernel with shape \(36, 12\) here.*\(36, 10\)'):
    build(trained_like(hidden=10))
  with pytest.raises(models.IncompatibleModelError, match='has 2 weights.*builds 4'):
    build(trained_like().get_weights()[:2])


@pytest.mark.parametrize('name', ['model.keras', 'model.h5', 'saved_model'])
def test_load_keras_model_round_trip(tmp_path, name):
  source = trained_like(seed=2)
  path = tmp_path / name
  source.save(path)
  loaded = models.load_keras_model(path)
  for a, b in zip(loaded.get_weights(), source.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_load_keras_model_errors_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope'):
    models.load_keras_model(tmp_path / 'nope.keras')
  bad = tmp_path / 'bad.keras'
  bad.write_bytes(b'not a model')
  with pytest.raises(models.IncompatibleModelError, match='bad.keras'):
    models.load_keras_model(bad)
