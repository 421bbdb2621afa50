"""The masked network as a `tff.learning` model, for TFF's own computations.

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
