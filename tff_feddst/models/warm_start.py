"""Starting a run from a trained model: load it, check it fits, copy its weights.

A production team usually starts federated training from a model it trained
centrally. The builders take such a model (or its weight arrays) as
`initial_weights`; the initial masks are then the magnitude pruning of those
weights, not of a random init. A model that does not match the architecture
the run builds is refused with the first mismatch named, never half-copied.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf


class IncompatibleModelError(ValueError):
  """The given weights do not fit the model the run builds."""


def load_keras_model(path: str | os.PathLike) -> tf.keras.Model:
  """A Keras model from a SavedModel directory or a .keras / .h5 file."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist (expected a SavedModel '
                            'directory or a .keras/.h5 file).')
  try:
    return tf.keras.models.load_model(path, compile=False)
  except (OSError, ValueError, IOError) as e:
    raise IncompatibleModelError(
        f'{path} is not a Keras model that can be loaded (a SavedModel '
        f'directory or a .keras/.h5 file): {e}') from e


def _describe(model: tf.keras.Model) -> list[tuple[str, tuple[int, ...]]]:
  """(name, shape) of each weight in `get_weights()` order."""
  return [(w.name.split(':')[0], tuple(w.shape.as_list()))
          for w in model.weights]


def copy_weights(target: tf.keras.Model,
                 source: tf.keras.Model | Sequence[np.ndarray]) -> None:
  """Copies `source` (a Keras model or `get_weights()` arrays) into `target`.

  Raises:
    IncompatibleModelError: naming the first weight (in layer order) whose
      shape differs, or the count when one model has more weights.
  """
  want = _describe(target)
  if isinstance(source, tf.keras.Model):
    got = _describe(source)
    arrays = source.get_weights()
  else:
    arrays = [np.asarray(a) for a in source]
    got = [(f'array {i}', a.shape) for i, a in enumerate(arrays)]
  for i, ((name, shape), (src_name, src_shape)) in enumerate(zip(want, got)):
    if tuple(shape) != tuple(src_shape):
      raise IncompatibleModelError(
          f'The given model does not match the one this run builds: weight '
          f'{i} is {name} with shape {shape} here, but {src_name} with shape '
          f'{tuple(src_shape)} in the given model.')
  if len(want) != len(got):
    extra = (want[len(got)][0] + ' (missing in the given model)'
             if len(want) > len(got) else
             got[len(want)][0] + ' (not in this run\'s model)')
    raise IncompatibleModelError(
        f'The given model has {len(got)} weights, the one this run builds '
        f'{len(want)}; the first unmatched is {extra}.')
  target.set_weights([np.asarray(a, w.dtype.as_numpy_dtype)
                      for a, w in zip(arrays, target.weights)])
