"""Decoding the sparse uploads into masked weighted sums, inside the aggregation.

`(<(), P@CLIENTS, float32@CLIENTS> -> <(), MaskedSums@SERVER, M@SERVER>)`

Built on `tff.federated_aggregate`, whose `accumulate` decodes each client's
payload (as TFF's encoded aggregators do), so only the encoded payload crosses
the client -> server boundary. Per masked kernel the accumulator keeps two
forms, because `zero` cannot read the server's global mask:

* clients that sent a mask (they readjusted): values scattered into dense
  position sums, their weighted mask votes and the count of clients keeping
  each weight;
* clients that sent none (their mask is the global one): values summed as
  fixed-length vectors in global-mask order, scattered by the finalizer, which
  knows the global mask.

The dense forms are sized lazily: they stay empty (float32[0], typed
float32[None]) until a client that sent a mask is added. Most rounds no
client readjusts, and then the sums that move between TFF's computations are
the live-count vectors alone, not three kernel-sized arrays per kernel.

Unmasked params get a plain weighted sum. A client whose payload holds a NaN
or Inf, or whose weights' L2 norm exceeds `norm_bound`, is left out of every
sum and counted in `dropped_clients`.

TFF's own robust wrappers (`tff.aggregators.zeroing_factory`, clipping) do not
compose with this aggregator: they scale or zero a *delta*, while this payload
carries weights (zeroing it would pull the model to 0, clipping would shrink
it) plus uint8 masks they cannot norm. Dropping the client is the
weight-space equivalent of zeroing its delta.
The finalizer turns the sums into the masked weighted mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.sparse import codec
from tff_feddst.sparse.codec import SparsePayload
from tff_feddst.sparse.layout import ModelLayout


class MaskedSums(NamedTuple):
  """The accumulator: per-kernel lists of sums, then dense sums and totals.

  Kernel sums, vote weights and vote counts are dense (kernel size) for the
  clients that sent masks, or empty while none has (`at_size` reads them);
  fixed sums are in global-mask order (padded to the largest live count the
  layout allows) for those that sent none.
  """
  kernel_sums: list[Any]
  vote_weights: list[Any]
  vote_counts: list[Any]
  fixed_sums: list[Any]
  fixed_weights: list[Any]
  fixed_counts: list[Any]
  dense_sums: list[Any]
  total_weight: Any
  clients: Any
  dropped_clients: Any


def _empty_sum() -> tf.Tensor:
  """float32[0] typed float32[None], so that a sum can grow to kernel size."""
  return tf.compat.v1.placeholder_with_default(tf.zeros([0], tf.float32),
                                               [None])


def at_size(lazy_sum, size) -> tf.Tensor:
  """A vector of at most `size` values (e.g. a lazily sized sum, empty or
  full) zero-padded to `size`."""
  return tf.pad(lazy_sum, [[0, size - tf.size(lazy_sum)]])


def zero_sums(layout: ModelLayout) -> MaskedSums:
  sizes, live = layout.kernel_sizes, layout.live_counts
  return MaskedSums(
      kernel_sums=[_empty_sum() for _ in sizes],
      vote_weights=[_empty_sum() for _ in sizes],
      vote_counts=[_empty_sum() for _ in sizes],
      fixed_sums=[tf.zeros([n], tf.float32) for n in live],
      fixed_weights=[tf.zeros([], tf.float32) for _ in sizes],
      fixed_counts=[tf.zeros([], tf.float32) for _ in sizes],
      dense_sums=[tf.zeros(s.shape, tf.float32) for s in layout.dense_specs],
      total_weight=tf.zeros([], tf.float32),
      clients=tf.zeros([], tf.int32),
      dropped_clients=tf.zeros([], tf.int32),
  )


def is_usable(payload: SparsePayload, norm_bound: float) -> tf.Tensor:
  """False for a payload with a NaN/Inf, or whose L2 norm exceeds the bound."""
  tensors = [tf.cast(t, tf.float32) for t in payload.values + payload.dense]
  finite = tf.reduce_all(tf.stack(
      [tf.reduce_all(tf.math.is_finite(t)) for t in tensors]))
  norm = tf.linalg.global_norm([tf.where(tf.math.is_finite(t), t, 0.0)
                                for t in tensors])
  return tf.logical_and(finite, norm <= norm_bound)


def accumulate(layout: ModelLayout, acc: MaskedSums, payload: SparsePayload,
               weight, norm_bound: float = float('inf')) -> MaskedSums:
  """Adds one client's payload, decoding its masks where it sent them."""
  finite = is_usable(payload, norm_bound)
  weight = tf.where(finite, tf.cast(weight, tf.float32), 0.0)
  take = tf.cast(finite, tf.float32)
  fields = ('kernel_sums', 'vote_weights', 'vote_counts', 'fixed_sums',
            'fixed_weights', 'fixed_counts')
  new = {f: [] for f in fields}
  for i, size in enumerate(layout.kernel_sizes):
    values = tf.where(finite, tf.cast(payload.values[i], tf.float32), 0.0)
    packed = payload.masks[i]
    current = [getattr(acc, f)[i] for f in fields]

    def with_mask(values=values, packed=packed, current=current, size=size):
      ks, vw, vc, fs, fw, fc = current
      ks, vw, vc = (at_size(x, size) for x in (ks, vw, vc))
      mask = tf.cast(codec.unpack_bits(packed, size), tf.float32)
      dense = codec.scatter_values(values, mask)
      return (ks + weight * dense, vw + weight * mask, vc + take * mask,
              fs, fw, fc)

    def without_mask(values=values, current=current, n=layout.live_counts[i]):
      ks, vw, vc, fs, fw, fc = current
      # A global mask sparser than the layout's largest (final_sparsity):
      # the values fill the first entries.
      values = at_size(values, n)
      values = tf.ensure_shape(tf.reshape(values, [n]), [n])
      return ks, vw, vc, fs + weight * values, fw + weight, fc + take

    out = tf.cond(tf.size(packed) > 0, with_mask, without_mask)
    for f, o in zip(fields, out):
      new[f].append(o)
  return acc._replace(
      **new,
      dense_sums=[s + weight * tf.where(finite, tf.cast(d, tf.float32), 0.0)
                  for s, d in zip(acc.dense_sums, payload.dense)],
      total_weight=acc.total_weight + weight,
      clients=acc.clients + 1,
      dropped_clients=acc.dropped_clients + 1 - tf.cast(finite, tf.int32))


def merge(a, b):
  return tf.nest.map_structure(_add, a, b)


def _add(a, b):
  if a.shape.is_fully_defined() and a.shape == b.shape:
    return a + b
  size = tf.maximum(tf.size(a), tf.size(b))  # Lazily sized sums.
  return at_size(a, size) + at_size(b, size)


class MaskedSumFactory(tff.aggregators.WeightedAggregationFactory):
  """Weighted aggregation of sparse payloads into `MaskedSums` at the server."""

  def __init__(self, layout: ModelLayout, *, norm_bound: float = 1e6):
    self._layout = layout
    self._norm_bound = float(norm_bound)

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    layout, norm_bound = self._layout, self._norm_bound

    def measure(acc):
      senders = tf.reduce_max(tf.stack(
          [tf.reduce_max(tf.concat([[0.0], c], 0)) for c in acc.vote_counts]))
      return dict(clients=acc.clients, dropped_clients=acc.dropped_clients,
                  max_mask_votes=senders)

    return stateless_sum_process(
        value_type, weight_type, zero=lambda: zero_sums(layout),
        accumulate=lambda acc, payload, weight: accumulate(
            layout, acc, payload, weight, norm_bound),
        measure=measure)


def stateless_sum_process(value_type, weight_type, *, zero: Callable,
                          accumulate: Callable, measure: Callable
                          ) -> tff.templates.AggregationProcess:
  """A stateless `AggregationProcess`: one `federated_aggregate` of the
  (value, weight) pairs into `zero()` by `accumulate(acc, value, weight)`,
  merged by addition, and its sums measured by `measure(sums)` (all TF
  functions; the masked sums here, PruneFL's importance sums in
  `aggregators.importance`)."""

  @tff.tensorflow.computation
  def zero_fn():
    return zero()

  acc_type = zero_fn.type_signature.result

  @tff.tensorflow.computation(acc_type, (value_type, weight_type))
  def accumulate_fn(acc, value_and_weight):
    return accumulate(acc, *value_and_weight)

  @tff.tensorflow.computation(acc_type, acc_type)
  def merge_fn(a, b):
    return merge(a, b)

  @tff.tensorflow.computation(acc_type)
  def report_fn(acc):
    return acc

  @tff.tensorflow.computation(acc_type)
  def measure_fn(acc):
    return measure(acc)

  @tff.federated_computation()
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.federated_computation(init_fn.type_signature.result,
                             tff.FederatedType(value_type, tff.CLIENTS),
                             tff.FederatedType(weight_type, tff.CLIENTS))
  def next_fn(state, value, weight):
    sums = tff.federated_aggregate(tff.federated_zip((value, weight)),
                                   zero_fn(), accumulate_fn, merge_fn,
                                   report_fn)
    return tff.templates.MeasuredProcessOutput(
        state, sums, tff.federated_map(measure_fn, sums))

  return tff.templates.AggregationProcess(init_fn, next_fn)


MEAN_OVER = ('holders', 'all')


def masked_mean(layout: ModelLayout, sums: MaskedSums, global_masks, *,
                mean_over: str = 'holders'):
  """(kernel means, weighted votes, vote counts, dense means) from the sums.

  With `mean_over='holders'` (FedDST) each kernel entry is averaged over the
  clients whose mask keeps it, weighted by their example counts; with 'all'
  (plain FedAvg of the sparse client models, SparsyFed) over every usable
  client, a client that does not keep it counting as 0. Entries no client
  keeps are 0.
  """
  del layout  # The sums carry their shapes.
  if mean_over not in MEAN_OVER:
    raise ValueError(f'mean_over must be one of {MEAN_OVER}, got '
                     f'{mean_over!r}.')
  means, weights, counts = [], [], []
  for i, g in enumerate(global_masks):
    g_flat = tf.reshape(tf.cast(g, tf.float32), [-1])
    live = tf.cast(tf.reduce_sum(g_flat), tf.int32)
    size = tf.size(g_flat)
    total = at_size(sums.kernel_sums[i], size) + codec.scatter_values(
        sums.fixed_sums[i][:live], g_flat)
    w = at_size(sums.vote_weights[i], size) + g_flat * sums.fixed_weights[i]
    c = at_size(sums.vote_counts[i], size) + g_flat * sums.fixed_counts[i]
    denominator = w if mean_over == 'holders' else sums.total_weight
    means.append(tf.reshape(tf.math.divide_no_nan(total, denominator),
                            tf.shape(g)))
    weights.append(tf.reshape(w, tf.shape(g)))
    counts.append(tf.reshape(c, tf.shape(g)))
  dense = [tf.math.divide_no_nan(s, sums.total_weight)
           for s in sums.dense_sums]
  return means, weights, counts, dense
