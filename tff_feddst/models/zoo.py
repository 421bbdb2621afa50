"""The paper's networks (same layer shapes as the FedDST reference) and small demos.

All return plain, unwrapped Keras models that output logits
(use losses with `from_logits=True`). Convolutions use 'valid' padding and
3x3 stride-1 max pooling, as the reference's PyTorch nets do.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tff_feddst import choices

L = tf.keras.layers


def mnist_cnn(input_shape=(28, 28, 1), num_classes: int = 10) -> tf.keras.Model:
  """MNIST / Fashion-MNIST CNN: 261,840 parameters (reference `MNISTNet`)."""
  return tf.keras.Sequential([
      L.Input(input_shape),
      L.Conv2D(10, 5, activation='relu', name='conv1'),
      L.MaxPool2D(3, strides=1),
      L.Conv2D(20, 5, activation='relu', name='conv2'),
      L.MaxPool2D(3, strides=1),
      L.Flatten(),
      L.Dense(50, activation='relu', name='fc1'),
      L.Dense(num_classes, name='fc2'),
  ], name='mnist_cnn')


def cifar_cnn(input_shape=(32, 32, 3), num_classes: int = 10) -> tf.keras.Model:
  """CIFAR-10 CNN (reference `CIFAR10Net`): conv 3->6->16, FC 6400->120->84."""
  return tf.keras.Sequential([
      L.Input(input_shape),
      L.Conv2D(6, 5, activation='relu', name='conv1'),
      L.MaxPool2D(3, strides=1),
      L.Conv2D(16, 5, activation='relu', name='conv2'),
      L.MaxPool2D(3, strides=1),
      L.Flatten(),
      L.Dense(120, activation='relu', name='fc1'),
      L.Dense(84, activation='relu', name='fc2'),
      L.Dense(num_classes, name='fc3'),
  ], name='cifar_cnn')


def femnist_cnn(input_shape=(28, 28, 1), num_classes: int = 62) -> tf.keras.Model:
  """The LEAF FEMNIST CNN: conv 32, pool 2, conv 64, pool 2, FC 2048, FC 62."""
  return tf.keras.Sequential([
      L.Input(input_shape),
      L.Conv2D(32, 5, padding='same', activation='relu', name='conv1'),
      L.MaxPool2D(2),
      L.Conv2D(64, 5, padding='same', activation='relu', name='conv2'),
      L.MaxPool2D(2),
      L.Flatten(),
      L.Dense(2048, activation='relu', name='fc1'),
      L.Dense(num_classes, name='fc2'),
  ], name='femnist_cnn')


def digits_cnn(input_shape=(8, 8, 1), num_classes: int = 10) -> tf.keras.Model:
  """A small CNN for scikit-learn's 8x8 digits (the embedded demo data)."""
  return tf.keras.Sequential([
      L.Input(input_shape),
      L.Conv2D(16, 3, padding='same', activation='relu', name='conv1'),
      L.MaxPool2D(2),
      L.Conv2D(32, 3, padding='same', activation='relu', name='conv2'),
      L.Flatten(),
      L.Dense(64, activation='relu', name='fc1'),
      L.Dense(num_classes, name='fc2'),
  ], name='digits_cnn')


def mlp(input_shape=(8, 8, 1), num_classes: int = 10,
        hidden: int = 64) -> tf.keras.Model:
  """A two-layer perceptron, the cheapest model for tests."""
  return tf.keras.Sequential([
      L.Input(input_shape),
      L.Flatten(),
      L.Dense(hidden, activation='relu', name='fc1'),
      L.Dense(num_classes, name='fc2'),
  ], name='mlp')


_BUILDERS = {'mnist_cnn': mnist_cnn, 'cifar_cnn': cifar_cnn,
             'femnist_cnn': femnist_cnn, 'digits_cnn': digits_cnn, 'mlp': mlp}
# The launcher offers choices.MODELS; a name without a builder fails here.
MODELS: dict[str, Callable[..., tf.keras.Model]] = {
    name: _BUILDERS[name] for name in choices.MODELS}


def get_model_fn(name: str, input_shape, num_classes: int
                 ) -> Callable[[], tf.keras.Model]:
  """A no-arg `model_fn` for `build_weighted_feddst`."""
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; expected one of '
                     f'{sorted(MODELS)}.')
  return lambda: MODELS[name](tuple(input_shape), num_classes)
