"""A LearningProcess whose state keeps the global masks bit-packed.

`compose_learning_process` keeps the model weights in the state as they are,
TF-MOT's float32 masks included. The state crosses from Python to the TFF
worker and back every round, so the masks cost a model's worth of bytes each
way (`experiments/state_round_trip.py`). The wrapped process stores each mask
of `global_model_weights.non_trainable` as `codec.pack_bits` (uint8, 8 weights
a byte); its `next` unpacks, runs the inner round and packs again inside the
worker. `get_model_weights`, `set_model_weights` and the hparams speak the
inner process's unpacked weights, so callers see the same model weights.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.sparse import codec
from tff_feddst.sparse.layout import ModelLayout


def _with_masks(state, layout: ModelLayout, convert):
  """`state` with each mask of its global weights replaced by `convert(mask,
  kernel shape, mask dtype)`."""
  weights = state.global_model_weights
  non_trainable = list(weights.non_trainable)
  for i, shape in zip(layout.mask_index, layout.kernel_shapes):
    non_trainable[i] = convert(non_trainable[i], shape,
                               layout.non_trainable_specs[i].dtype)
  return tff.learning.templates.LearningAlgorithmState(
      global_model_weights=tff.learning.models.ModelWeights(
          list(weights.trainable), non_trainable),
      distributor=state.distributor, client_work=state.client_work,
      aggregator=state.aggregator, finalizer=state.finalizer)


def pack_state(state, layout: ModelLayout):
  """The inner state with its 0/1 masks packed (inside a TF computation)."""
  return _with_masks(state, layout, lambda m, shape, dtype: codec.pack_bits(m))


def unpack_state(state, layout: ModelLayout):
  """Inverse of `pack_state`: the masks as the model's 0/1 tensors."""
  return _with_masks(state, layout, lambda p, shape, dtype: tf.cast(
      codec.decode_mask(p, shape), dtype))


def unpacked_model_weights(state, layout: ModelLayout
                           ) -> tff.learning.models.ModelWeights:
  """The global weights a packed Python state holds, masks unpacked (numpy);
  for inspection: the state's own weights, unlike `get_model_weights`, which
  may convert them (SparsyFed's effective weights)."""
  weights = unpack_state(state, layout).global_model_weights
  return tff.learning.models.ModelWeights(
      [np.asarray(w) for w in weights.trainable],
      [np.asarray(w) for w in weights.non_trainable])


def with_packed_masks(process: tff.learning.templates.LearningProcess,
                      layout: ModelLayout
                      ) -> tff.learning.templates.LearningProcess:
  """`process` with its state's masks bit-packed (the masks must be 0/1)."""
  inner_state_type = process.next.type_signature.parameter[0].member

  @tff.tensorflow.computation(inner_state_type)
  def pack(state):
    return pack_state(state, layout)

  state_type = pack.type_signature.result

  @tff.tensorflow.computation(state_type)
  def unpack(state):
    return unpack_state(state, layout)

  @tff.federated_computation()
  def init_fn():
    return tff.federated_map(pack, process.initialize())

  @tff.federated_computation(init_fn.type_signature.result,
                             process.next.type_signature.parameter[1])
  def next_fn(state, client_data):
    output = process.next(tff.federated_map(unpack, state), client_data)
    return tff.learning.templates.LearningProcessOutput(
        tff.federated_map(pack, output.state), output.metrics)

  def through(inner_get, inner_set):
    """A getter and a setter on the packed state around the inner ones."""
    @tff.tensorflow.computation(state_type)
    def get(state):
      return inner_get(unpack_state(state, layout))

    @tff.tensorflow.computation(state_type,
                                inner_set.type_signature.parameter[1])
    def set_(state, value):
      return pack_state(inner_set(unpack_state(state, layout), value), layout)

    return get, set_

  get_model_weights, set_model_weights = through(process.get_model_weights,
                                                 process.set_model_weights)
  get_hparams, set_hparams = through(process.get_hparams, process.set_hparams)

  return tff.learning.templates.LearningProcess(
      init_fn, next_fn, get_model_weights, set_model_weights,
      get_hparams_fn=get_hparams, set_hparams_fn=set_hparams)


def compose(parts) -> tff.learning.templates.LearningProcess:
  """`compose_learning_process` of a builder's parts (`initial_model_weights_fn`,
  `distributor`, `client_work`, `aggregator`, `finalizer`, `layout`), with the
  state's masks packed."""
  return with_packed_masks(tff.learning.templates.compose_learning_process(
      parts.initial_model_weights_fn, parts.distributor, parts.client_work,
      parts.aggregator, parts.finalizer), parts.layout)
