"""Server -> clients: the masked global model as a sparse payload.

`(<S@SERVER, W@SERVER> -> <S@SERVER, P@CLIENTS, M@SERVER>)`: the server
encodes its weights (live values + packed mask + dense params) and broadcasts
that payload. Cross-device clients are stateless, so the mask is always sent.
Its bytes are counted where the payload arrives, by the client work (one
owner for every byte figure), so this process measures nothing.
"""

from __future__ import annotations

import tensorflow_federated as tff

from tff_feddst.sparse import codec
from tff_feddst.sparse.layout import ModelLayout


def build_sparse_distributor(layout: ModelLayout, weights_type
                             ) -> tff.templates.MeasuredProcess:
  """A `tff.learning.templates.DistributionProcess` sending the sparse payload."""

  @tff.tensorflow.computation(weights_type)
  def encode_weights(weights):
    kernels, masks, dense = layout.split(weights.trainable,
                                         weights.non_trainable)
    payload = codec.encode(kernels, masks, dense, send_masks=True)
    return payload

  @tff.federated_computation()
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.federated_computation(init_fn.type_signature.result,
                             tff.FederatedType(weights_type, tff.SERVER))
  def next_fn(state, weights):
    payload = tff.federated_map(encode_weights, weights)
    return tff.templates.MeasuredProcessOutput(
        state, tff.federated_broadcast(payload),
        tff.federated_value((), tff.SERVER))

  return tff.learning.templates.DistributionProcess(init_fn, next_fn)
