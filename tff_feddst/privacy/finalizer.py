"""DP mode's server step: W += the noisy mean delta, inside the fixed mask.

`(<S@SERVER, W@SERVER, float32[n]@SERVER> -> <S@SERVER, W@SERVER, M@SERVER>)`

The mean delta (`aggregator`) is scattered into the global mask through the
layout (`sparse.flat_update.add_to_weights`): live weights and dense params move,
masked weights stay exactly 0 and the mask never changes (DP mode fixes it).
An optional server optimizer steps on the pseudo-gradient −mean, as TFF's
`build_apply_optimizer_finalizer` does, re-masked afterwards.
"""

from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.sparse import flat_update
from tff_feddst.templates import finalizer as finalizer_lib
from tff_feddst.sparse.layout import ModelLayout


def build_delta_finalizer(layout: ModelLayout, weights_type, mean_type, *,
                          server_optimizer=None
                          ) -> tff.learning.templates.FinalizerProcess:
  @tff.tensorflow.computation
  def init_tf():
    return finalizer_lib.initial_state(layout, server_optimizer,
                                       mask_history=False)

  state_type = init_tf.type_signature.result

  @tff.tensorflow.computation(state_type, weights_type, mean_type)
  def step(state, weights, mean):
    old_trainable = list(weights.trainable)
    trainable, non_trainable = flat_update.add_to_weights(
        layout, old_trainable, list(weights.non_trainable), mean)
    masks = [non_trainable[i] for i in layout.mask_index]
    optimizer_state, trainable = finalizer_lib.server_optimizer_step(
        server_optimizer, state['optimizer'], layout, old_trainable,
        trainable, masks)
    measurements = finalizer_lib.density_measurements(layout, masks)
    return (collections.OrderedDict(optimizer=optimizer_state),
            tff.learning.models.ModelWeights(trainable, non_trainable),
            measurements)

  return finalizer_lib.finalizer_process(init_tf, step, weights_type,
                                        mean_type)
