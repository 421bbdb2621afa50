"""PruneFL's mask reconfiguration in TensorFlow, for the server computation.

TFF runs the server step as a TensorFlow graph (in its worker, where Python
cannot be called back), so `sparsity.prunefl.reconfigure` is restated here
with tensor ops: the same protected core, the same candidate order (best
s/t first, ties by layer then flat index: a stable sort of the candidates
listed layer by layer), the same stopping test and cap. Sums are float64, as
in numpy; `tests/sparsity/test_prunefl_tf.py` checks both give the same masks.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def is_reconfiguration_round(round_num, interval: int) -> tf.Tensor:
  """`prunefl.is_reconfiguration_round` for a scalar tensor."""
  r = tf.cast(round_num, tf.int64)
  return tf.logical_and(r >= interval, tf.equal(r % interval, 0))


def protected_core(weights, mask, max_decrease) -> tf.Tensor:
  """bool: the live weights never dropped (`prunefl.protected_core`)."""
  live_mask = tf.convert_to_tensor(mask) > 0
  magnitude = tf.abs(tf.convert_to_tensor(weights))
  live = tf.sort(tf.boolean_mask(magnitude, live_mask))
  q = tf.size(live)
  k = tf.cast(tf.floor(tf.cast(max_decrease, tf.float64) *
                       tf.cast(q, tf.float64)), tf.int32)
  threshold = tf.cond(q > 0, lambda: live[tf.minimum(k, q - 1)],
                      lambda: tf.constant(np.inf, magnitude.dtype))
  return tf.logical_and(live_mask, magnitude >= threshold)


def reconfigure(weights, masks, importance, time_per_weight, *, base_time,
                max_decrease, base_importance=0.0, max_live=None
                ) -> list[tf.Tensor]:
  """float32 0/1 masks maximising R over masks containing the core (under the
  cap `max_live`, None: none); the arguments as `prunefl.reconfigure`, as
  tensors (times and base values scalars)."""
  f64 = lambda x: tf.cast(x, tf.float64)
  cores = [protected_core(w, m, max_decrease) for w, m in zip(weights, masks)]
  times = [f64(t) for t in time_per_weight]
  numerator = f64(base_importance) + tf.add_n(
      [tf.reduce_sum(tf.where(k, f64(s), 0.0))
       for s, k in zip(importance, cores)])
  core_live = [tf.reduce_sum(tf.cast(k, tf.int64)) for k in cores]
  denominator = f64(base_time) + tf.add_n(
      [t * f64(n) for t, n in zip(times, core_live)])
  layer_ids, flat_ids, gains, costs = [], [], [], []
  for layer, (s, k, t) in enumerate(zip(importance, cores, times)):
    candidates = tf.reshape(tf.where(tf.logical_not(tf.reshape(k, [-1]))),
                            [-1])
    layer_ids.append(tf.fill(tf.shape(candidates), layer))
    flat_ids.append(candidates)
    gains.append(tf.gather(tf.reshape(f64(s), [-1]), candidates))
    costs.append(tf.fill(tf.shape(candidates), t))
  layer_ids, flat_ids, gains, costs = (tf.concat(a, 0) for a in (
      layer_ids, flat_ids, gains, costs))
  order = tf.argsort(-(gains / costs), stable=True)
  sorted_gains, sorted_costs = tf.gather(gains, order), tf.gather(costs, order)
  before_num = numerator + tf.cumsum(sorted_gains, exclusive=True)
  before_den = denominator + tf.cumsum(sorted_costs, exclusive=True)
  improves = sorted_gains * before_den > before_num * sorted_costs
  size = tf.size(improves)
  positions = tf.range(size)
  taken = tf.reduce_min(tf.concat(
      [tf.boolean_mask(positions, tf.logical_not(improves)), [size]], 0))
  if max_live is not None:
    room = tf.cast(max_live, tf.int64) - tf.add_n(core_live)
    taken = tf.minimum(taken, tf.cast(tf.maximum(room, 0), tf.int32))
  chosen = tf.scatter_nd(order[:, None], tf.cast(positions < taken, tf.int32),
                         [size]) > 0
  new = []
  for layer, (k, m) in enumerate(zip(cores, masks)):
    mine = tf.logical_and(chosen, tf.equal(layer_ids, layer))
    ids = tf.boolean_mask(flat_ids, mine)
    flat = tf.tensor_scatter_nd_update(
        tf.reshape(tf.cast(k, tf.float32), [-1]), ids[:, None],
        tf.ones_like(ids, tf.float32))
    new.append(tf.reshape(flat, tf.shape(m)))
  return new
