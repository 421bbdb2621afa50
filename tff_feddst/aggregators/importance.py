"""PruneFL's uploads into masked sums plus example-weighted importance sums.

`(<(), ImportanceUpload@CLIENTS, float32@CLIENTS> -> <(), ImportanceSums@SERVER, M@SERVER>)`

The sparse payload goes into `masked_mean`'s sums unchanged. The importance
(Σ_steps g)², which clients upload every round
(`sparse.ImportanceUpload`), is summed weighted by each
client's examples processed n_k — PruneFL's aggregation: the authors'
clients multiply their squared gradient sum by n_k and the server adds them
up (jiangyuang/PruneFL, `AdaptiveClient.main`, `AdaptiveServer.main`); the
rounds' sums are added up until a reconfiguration by the finalizer
(`templates.prunefl_finalizer`). Only its ratios to the time model matter,
so it is not normalized. A client left out of the masked sums (NaN/Inf or
over the norm bound), or whose importance is not finite, adds no
importance.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.aggregators import masked_mean
from tff_feddst.sparse.layout import ModelLayout


class ImportanceSums(NamedTuple):
  """The masked sums, Σ_k n_k s_k per kernel (flat), Σ_k n_k S0_k, and the
  clients and examples that contributed importance."""
  sums: masked_mean.MaskedSums
  importance: list[Any]
  base_importance: Any
  importance_clients: Any
  importance_examples: Any


def zero_sums(layout: ModelLayout) -> ImportanceSums:
  return ImportanceSums(
      sums=masked_mean.zero_sums(layout),
      importance=[tf.zeros([n], tf.float32) for n in layout.kernel_sizes],
      base_importance=tf.zeros([], tf.float32),
      importance_clients=tf.zeros([], tf.int32),
      importance_examples=tf.zeros([], tf.float32))


def accumulate(layout: ModelLayout, acc: ImportanceSums, upload, weight,
               norm_bound: float) -> ImportanceSums:
  """Adds one client's upload (`ImportanceUpload`) with its weight n_k."""
  finite = tf.reduce_all(tf.stack(
      [tf.reduce_all(tf.math.is_finite(t))
       for t in list(upload.importance) + [upload.base_importance]]))
  take = tf.logical_and(
      masked_mean.is_usable(upload.payload, norm_bound), finite)
  w = tf.where(take, tf.cast(weight, tf.float32), 0.0)

  def scaled(t, n):
    t = tf.where(take, tf.cast(t, tf.float32), 0.0)
    return tf.reshape(masked_mean.at_size(t, n), [n]) * w

  return ImportanceSums(
      sums=masked_mean.accumulate(layout, acc.sums, upload.payload, weight,
                                  norm_bound),
      importance=[a + scaled(s, n) for a, s, n in
                  zip(acc.importance, upload.importance, layout.kernel_sizes)],
      base_importance=acc.base_importance + tf.reduce_sum(
          scaled(upload.base_importance, 1)),
      importance_clients=acc.importance_clients + tf.cast(take, tf.int32),
      importance_examples=acc.importance_examples + w)


class ImportanceSumFactory(tff.aggregators.WeightedAggregationFactory):
  """Weighted aggregation of PruneFL uploads into `ImportanceSums`."""

  def __init__(self, layout: ModelLayout, *, norm_bound: float = 1e6):
    self._layout = layout
    self._norm_bound = float(norm_bound)

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    layout, norm_bound = self._layout, self._norm_bound

    def measure(acc):
      return dict(clients=acc.sums.clients,
                  dropped_clients=acc.sums.dropped_clients,
                  importance_clients=acc.importance_clients)

    return masked_mean.stateless_sum_process(
        value_type, weight_type, zero=lambda: zero_sums(layout),
        accumulate=lambda acc, upload, weight: accumulate(
            layout, acc, upload, weight, norm_bound),
        measure=measure)
