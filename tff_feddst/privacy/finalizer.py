"""DP mode's server step: W += the noisy mean delta, inside the fixed mask.

`(<S@SERVER, W@SERVER, float32[n]@SERVER> -> <S@SERVER, W@SERVER, M@SERVER>)`

The mean delta (`aggregator`) is scattered into the global mask through the
layout (`flat_update.add_to_weights`): live weights and dense params move,
masked weights stay exactly 0 and the mask never changes (DP mode fixes it).
An optional server optimizer steps on the pseudo-gradient −mean, as TFF's
`build_apply_optimizer_finalizer` does, re-masked afterwards.
"""

from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.privacy import flat_update
from tff_feddst.sparse.layout import ModelLayout


def build_delta_finalizer(layout: ModelLayout, weights_type, mean_type, *,
                          server_optimizer=None
                          ) -> tff.learning.templates.FinalizerProcess:
  trainable_specs = tuple(tf.TensorSpec(s.shape, s.dtype)
                          for s in layout.trainable_specs)

  @tff.tensorflow.computation
  def init_tf():
    return collections.OrderedDict(
        optimizer=(() if server_optimizer is None else
                   server_optimizer.initialize(trainable_specs)))

  @tff.federated_computation()
  def init_fn():
    return tff.federated_eval(init_tf, tff.SERVER)

  state_type = init_fn.type_signature.result.member

  @tff.tensorflow.computation(state_type, weights_type, mean_type)
  def step(state, weights, mean):
    old_trainable = list(weights.trainable)
    trainable, non_trainable = flat_update.add_to_weights(
        layout, old_trainable, list(weights.non_trainable), mean)
    optimizer_state = state['optimizer']
    masks = [non_trainable[i] for i in layout.mask_index]
    if server_optimizer is not None:
      pseudo_grad = tuple(o - c for o, c in zip(old_trainable, trainable))
      optimizer_state, stepped = server_optimizer.next(
          optimizer_state, tuple(old_trainable), pseudo_grad)
      trainable = list(stepped)
      for i, m in zip(layout.kernel_index, masks):
        trainable[i] = trainable[i] * m
    live = [tf.reduce_sum(m) for m in masks]
    measurements = collections.OrderedDict(
        layer_density=tf.stack([l / float(n) for l, n in
                                zip(live, layout.kernel_sizes)]),
        density=tf.add_n(live) / float(sum(layout.kernel_sizes)))
    return (collections.OrderedDict(optimizer=optimizer_state),
            tff.learning.models.ModelWeights(trainable, non_trainable),
            measurements)

  @tff.federated_computation(init_fn.type_signature.result,
                             tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(mean_type, tff.SERVER))
  def next_fn(state, weights, mean):
    new_state, new_weights, measurements = tff.federated_map(
        step, (state, weights, mean))
    return tff.templates.MeasuredProcessOutput(new_state, new_weights,
                                               measurements)

  return tff.learning.templates.FinalizerProcess(init_fn, next_fn)
