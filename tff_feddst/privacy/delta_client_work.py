"""DP mode's client work: the masked local training, uploading the delta.

`(<S@SERVER, P@CLIENTS, {B*}@CLIENTS> -> <S@SERVER, ClientResult(float32[n], float32)@CLIENTS, M@SERVER>)`

Wraps the masked client work (`templates.client_work`) unchanged: with the
global mask fixed its upload holds the trained live values in global-mask
order and no mask, so trained − received is one fixed-length vector
(`sparse.flat_update`), which is what DP-FedAvg clips and noises. The update weight
is 1 (the DP mean is unweighted). The measurements, including the bytes, are
the wrapped work's: the delta has as many float32 values as its upload.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.sparse import flat_update
from tff_feddst.sparse.layout import ModelLayout


def build_delta_client_work(
    masked_work: tff.learning.templates.ClientWorkProcess,
    layout: ModelLayout) -> tff.learning.templates.ClientWorkProcess:
  """`masked_work` (built with no readjustment), uploading deltas."""
  state_type, payload_type, data_type = (
      masked_work.next.type_signature.parameter)
  result_type = masked_work.next.type_signature.result.result.member

  @tff.tensorflow.computation(payload_type.member, result_type)
  def to_delta(received, result):
    delta = (flat_update.from_payload(layout, result.update) -
             flat_update.from_payload(layout, received))
    return tff.learning.templates.ClientResult(
        update=delta, update_weight=tf.constant(1.0, tf.float32))

  @tff.federated_computation(state_type, payload_type, data_type)
  def next_fn(state, payload, data):
    out = masked_work.next(state, payload, data)
    result = tff.federated_map(to_delta, (payload, out.result))
    return tff.templates.MeasuredProcessOutput(out.state, result,
                                               out.measurements)

  return tff.learning.templates.ClientWorkProcess(masked_work.initialize,
                                                  next_fn)
