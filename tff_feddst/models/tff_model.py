"""The masked network between TFF and Keras: as a `tff.learning` model for
TFF's own computations, and back to a Keras model from a process's weights.

`tff.learning.algorithms.build_fed_eval` (and with it TFF's program logic,
`tff.learning.programs.EvaluationManager`) takes a model function whose
weights have the structure of the training process's
`get_model_weights(state)`. Ours are the TF-MOT-wrapped model's: kernels and
biases trainable; each kernel's mask, threshold and pruning step
non-trainable. The wrapper multiplies each kernel by its mask in the forward
pass, so the evaluation sees exactly the sparse model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.models import losses
from tff_feddst.models import prunable


def masked_model_fn(model_fn: Callable[[], tf.keras.Model], *, loss_fn,
                    input_spec, metrics_fn=None
                    ) -> Callable[[], tff.learning.models.VariableModel]:
  """A no-arg `tff.learning` model function on `model_fn`'s masked model,
  for `build_fed_eval` and TFF's program logic (see the module doc)."""
  def fn():
    return tff.learning.models.from_keras_model(
        prunable.make_prunable(model_fn(), log=False),
        loss=losses.loss_instance(loss_fn), input_spec=input_spec,
        metrics=metrics_fn() if metrics_fn else None)
  return fn


def keras_model_from_weights(model_fn: Callable[[], tf.keras.Model],
                             weights: tff.learning.models.ModelWeights, *,
                             strip: bool = True) -> tf.keras.Model:
  """A Keras model holding `weights` (e.g. `process.get_model_weights(state)`).

  With `strip` (default) the result is a plain Keras model whose kernels are
  multiplied by their masks, ready for evaluation and export; otherwise the
  TF-MOT-wrapped model with its masks.
  """
  model = prunable.make_prunable(model_fn(), log=False)
  trainable = [np.asarray(w) for w in weights.trainable]
  non_trainable = [np.asarray(w) for w in weights.non_trainable]
  if len(trainable) != len(model.trainable_weights) or len(
      non_trainable) != len(model.non_trainable_weights):
    raise ValueError('weights do not match the model built by model_fn: '
                     f'{len(trainable)}/{len(non_trainable)} trainable/'
                     f'non-trainable arrays for a model with '
                     f'{len(model.trainable_weights)}/'
                     f'{len(model.non_trainable_weights)}.')
  for v, w in zip(model.trainable_weights, trainable):
    v.assign(w)
  for v, w in zip(model.non_trainable_weights, non_trainable):
    v.assign(w)
  return prunable.strip(model) if strip else model
