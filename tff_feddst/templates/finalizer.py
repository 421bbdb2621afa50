"""The server step: masked mean -> next global mask -> server optimizer.

`(<S@SERVER, W@SERVER, MaskedSums@SERVER> -> <S@SERVER, W@SERVER, M@SERVER>)`

Each layer's new mask keeps exactly its target number of weights for this
round (constant, or moving towards `final_sparsity`), chosen by
`sparsity.next_global_mask`: FedDST's union re-pruned by |masked mean|,
optionally with the reference's `remember_old` ranking and this project's
consensus-regrowth quota (see that module). Masked-out weights are zeroed. An
optional server optimizer (FedAvgM) steps on the pseudo-gradient W - mean, as
TFF's `build_apply_optimizer_finalizer` does, and is re-masked afterwards.

The state counts rounds (they drive the quota and the sparsity schedule) and
keeps the mask of round 0 (bit-packed), against which the cumulative
turnover is measured.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import sparsity as sparsity_lib
from tff_feddst.aggregators import masked_mean as masked_mean_lib
from tff_feddst.sparse import codec
from tff_feddst.sparse.layout import ModelLayout


@dataclasses.dataclass(frozen=True)
class MaskRule:
  """How the server chooses the next global mask (see `sparsity.server_masks`).

  Attributes:
    min_votes: votes a weight needs to enter the union.
    remember_old: rank with the remembered mean (the reference's flag).
    consensus_regrowth: reserve floor(α_r · live) slots per layer on
      readjusting rounds for weights the clients regrew.
    fraction, rounds_between, end_round, schedule: the clients' readjustment
      schedule (α, R_adj, R_end), which the quota follows.
    live_count_table: target live counts per round (row r; the last row
      holds from then on), one column per kernel; None: the layout's.
    keep_unheld: a weight of the global mask that no usable client uploaded
      keeps its previous value and stays in the union (per-client density
      budgets: clients upload sub-masks of the global mask).
    mean_over: 'holders' (FedDST's masked mean) or 'all' (FedAvg of the
      sparse client models, zeros counted; `aggregators.masked_mean`).
    union_only: the next mask is the union of the usable clients' masks,
      not re-pruned to a target count (SparsyFed; the live counts and the
      other rules above are then unused).
  """
  min_votes: int = 0
  remember_old: bool = False
  consensus_regrowth: bool = False
  fraction: float = 0.0
  rounds_between: int = 10
  end_round: int = 0
  schedule: str = 'cosine'
  live_count_table: tuple[tuple[int, ...], ...] | None = None
  keep_unheld: bool = False
  mean_over: str = 'holders'
  union_only: bool = False


def live_count_table(layout: ModelLayout, kernel_shapes, sparsity: float,
                     final_sparsity: float | None, end_round: int,
                     distribution: str, bias_sizes=None
                     ) -> tuple[tuple[int, ...], ...]:
  """Rows r = 0..R_end of exact per-kernel live counts at `sparsity_at_round`."""
  if final_sparsity is None:
    return (tuple(layout.live_counts),)
  rows = []
  for r in range(max(end_round, 0) + 1):
    s = sparsity_lib.sparsity_at_round(r, sparsity, final_sparsity, end_round)
    rows.append(tuple(int(n) for n in sparsity_lib.layer_live_counts(
        kernel_shapes, s, distribution, bias_sizes=bias_sizes)))
  return tuple(rows)


def _targets(layout: ModelLayout, rule: MaskRule, round_num):
  table = rule.live_count_table or (tuple(layout.live_counts),)
  table = tf.constant(np.asarray(table, np.int32))
  row = tf.minimum(tf.cast(round_num, tf.int32), table.shape[0] - 1)
  return [table[row, i] for i in range(layout.num_kernels)]


def _keep_unheld(masks, kernels, means, counts):
  """Weights of the global mask that no usable client uploaded keep the
  server's value and count as one vote (budget runs: clients upload
  sub-masks, and a round whose clients all have small budgets must not erase
  the weights only larger budgets hold)."""
  new_means, new_counts = [], []
  for old_mask, old_kernel, mean, c in zip(masks, kernels, means, counts):
    unheld = tf.logical_and(old_mask > 0, c <= 0)
    new_means.append(tf.where(unheld, old_kernel, mean))
    new_counts.append(tf.where(unheld, tf.ones_like(c), c))
  return new_means, new_counts


def new_global_weights(layout: ModelLayout, trainable, non_trainable, sums,
                       *, rule: MaskRule = MaskRule(), round_num=0):
  """(candidate trainable, new non_trainable, new masks) before the optimizer."""
  kernels, masks, dense = layout.split(trainable, non_trainable)
  means, weights, counts, dense_means = masked_mean_lib.masked_mean(
      layout, sums, masks, mean_over=rule.mean_over)
  if rule.union_only:
    return _union_weights(layout, non_trainable, means, counts, dense,
                          dense_means)
  usable_clients = sums.clients - sums.dropped_clients
  readjusting = tf.constant(False)
  fraction = tf.constant(0.0)
  if rule.consensus_regrowth and rule.fraction > 0:
    readjusting = sparsity_lib.is_readjustment_round(
        round_num, rule.fraction, rule.end_round, rule.rounds_between,
        rule.schedule)
    fraction = sparsity_lib.readjustment_fraction(
        round_num, rule.fraction, rule.end_round, rule.schedule)
  new_masks = []
  regrowing = rule.consensus_regrowth and rule.fraction > 0
  if rule.keep_unheld:
    means, counts_used = _keep_unheld(masks, kernels, means, counts)
  else:
    counts_used = counts
  for old_mask, old_kernel, mean, w, c, n in zip(
      masks, kernels, means, weights, counts_used,
      _targets(layout, rule, round_num)):
    prev_live = tf.reduce_sum(tf.cast(old_mask > 0, tf.float32))
    quota = (tf.where(readjusting,
                      tf.cast(tf.floor(fraction * prev_live), tf.int32), 0)
             if regrowing else 0)
    new_masks.append(sparsity_lib.next_global_mask(
        old_mask, mean, w, c, num_live=n, min_votes=rule.min_votes,
        remember_old=rule.remember_old, prev_kernel=old_kernel,
        total_weight=sums.total_weight, clients=usable_clients,
        regrowth_quota=quota))
  new_kernels = [m * k for m, k in zip(new_masks, means)]
  bookkeeping = [non_trainable[i] for i in layout.bookkeeping_index]
  dense_means = [tf.cast(d, old.dtype) for d, old in zip(dense_means, dense)]
  return (layout.merge(new_kernels, new_masks, dense_means, bookkeeping),
          new_masks, counts)


def _union_weights(layout: ModelLayout, non_trainable, means, counts, dense,
                   dense_means):
  """`new_global_weights` for `MaskRule.union_only`: mask = union."""
  new_masks = [tf.cast(c > 0, tf.float32) for c in counts]
  new_kernels = [m * k for m, k in zip(new_masks, means)]
  bookkeeping = [non_trainable[i] for i in layout.bookkeeping_index]
  dense_means = [tf.cast(d, old.dtype) for d, old in zip(dense_means, dense)]
  return (layout.merge(new_kernels, new_masks, dense_means, bookkeeping),
          new_masks, counts)


def mask_dynamics(old_masks, new_masks, initial_masks, counts,
                  sums) -> collections.OrderedDict:
  """How much the global mask moved, and how much the clients' masks agree.

  `client_mask_jaccard` is the Jaccard index of the mean pairwise
  intersection of the usable clients' masks: with n live weights each,
  Ī / (2n - Ī), where Ī = Σ_w C(c_w, 2) / C(K, 2) from the vote counts c_w.
  By convexity it is a lower bound of the mean pairwise Jaccard (equal when
  all pairs overlap alike); 1 when no client changed its mask; NaN with
  fewer than 2 clients.
  """
  def entered(new, ref):
    return tf.add_n([tf.reduce_sum(tf.cast(
        tf.logical_and(n > 0, tf.equal(r, 0.0)), tf.int64))
                     for n, r in zip(new, ref)])

  live = tf.cast(tf.add_n([tf.reduce_sum(m) for m in new_masks]), tf.float64)
  # (Not `old == 0`: TFF traces in graph mode, where `==` on tensors is
  # Python identity.)
  swaps = entered(new_masks, old_masks)
  pair_overlap = tf.add_n([tf.reduce_sum(c * (c - 1.0) / 2.0)
                           for c in counts])
  k = tf.cast(sums.clients - sums.dropped_clients, tf.float32)
  pairs = k * (k - 1.0) / 2.0
  n = tf.add_n([tf.reduce_sum(m) for m in old_masks])
  mean_overlap = tf.math.divide_no_nan(pair_overlap, pairs)
  jaccard = tf.where(k >= 2.0, tf.math.divide_no_nan(
      mean_overlap, 2.0 * n - mean_overlap), math.nan)
  return collections.OrderedDict(
      # Weights that entered the global mask this round (as many left it).
      mask_swaps=swaps,
      mask_changed_fraction=tf.cast(swaps, tf.float64) / live,
      # The share of the mask not in the mask of round 0.
      mask_turnover=tf.cast(entered(new_masks, initial_masks),
                            tf.float64) / live,
      client_mask_jaccard=jaccard)


def server_optimizer_step(server_optimizer, optimizer_state, layout: ModelLayout,
                          old_trainable, candidate, masks):
  """The optional server optimizer on the pseudo-gradient old - candidate,
  re-masked (masked weights stay exactly 0). Returns (state, trainable)."""
  if server_optimizer is None:
    return optimizer_state, list(candidate)
  pseudo_grad = tuple(o - c for o, c in zip(old_trainable, candidate))
  optimizer_state, stepped = server_optimizer.next(
      optimizer_state, tuple(old_trainable), pseudo_grad)
  stepped = list(stepped)
  for i, m in zip(layout.kernel_index, masks):
    stepped[i] = stepped[i] * m
  return optimizer_state, stepped


def density_measurements(layout: ModelLayout, masks):
  """Per-layer and total density of the global masks."""
  live = [tf.reduce_sum(m) for m in masks]
  return collections.OrderedDict(
      layer_density=tf.stack([l / float(n) for l, n in
                              zip(live, layout.kernel_sizes)]),
      density=tf.add_n(live) / float(sum(layout.kernel_sizes)))


def finalizer_process(init_tf, step, weights_type, update_type
                      ) -> tff.learning.templates.FinalizerProcess:
  """The FinalizerProcess around a server `step(state, weights, update)`."""

  @tff.federated_computation()
  def init_fn():
    return tff.federated_eval(init_tf, tff.SERVER)

  @tff.federated_computation(init_fn.type_signature.result,
                             tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(update_type, tff.SERVER))
  def next_fn(state, weights, update):
    new_state, new_weights, measurements = tff.federated_map(
        step, (state, weights, update))
    return tff.templates.MeasuredProcessOutput(new_state, new_weights,
                                               measurements)

  return tff.learning.templates.FinalizerProcess(init_fn, next_fn)


def mask_measurements(layout: ModelLayout, packed_initial, old_masks,
                      new_masks, counts, sums, *, first, round0_masks=None):
  """Every mask finalizer's tail: (the state's new packed round-0 masks, the
  density and mask-dynamics measurements). The round-0 masks are
  `round0_masks` (default `old_masks`) when `first`, else the state's."""
  packed = [tf.cond(first, lambda m=m: codec.pack_bits(m),
                    lambda p=p: tf.identity(p)) for m, p in zip(
      old_masks if round0_masks is None else round0_masks, packed_initial)]
  initial_masks = [codec.decode_mask(p, shape)
                   for p, shape in zip(packed, layout.kernel_shapes)]
  measurements = density_measurements(layout, new_masks)
  measurements.update(mask_dynamics(old_masks, new_masks, initial_masks,
                                    counts, sums))
  return packed, measurements


def initial_state(layout: ModelLayout, server_optimizer, *,
                  mask_history: bool = True) -> collections.OrderedDict:
  """A finalizer's round-0 state (inside a TF computation): the round count
  and the round-0 masks (for the turnover; filled in round 0), and the
  server optimizer's state (() without one)."""
  state = collections.OrderedDict()
  if mask_history:
    state['round_num'] = tf.constant(0, tf.int64)
    # Packed 8 per byte: the state crosses to the worker and back every
    # round, and float masks would add a model's worth of bytes each way.
    state['initial_masks'] = [tf.zeros([-(-size // 8)], tf.uint8)
                              for size in layout.kernel_sizes]
  state['optimizer'] = (() if server_optimizer is None else
                        server_optimizer.initialize(tuple(
                            tf.TensorSpec(s.shape, s.dtype)
                            for s in layout.trainable_specs)))
  return state


def unless_no_update(sums, trainable, non_trainable, old_trainable,
                     old_non_trainable) -> tff.learning.models.ModelWeights:
  """The new weights, or the old ones when no client update was usable."""
  usable = sums.total_weight > 0
  return tff.learning.models.ModelWeights(
      [tf.where(usable, c, o) for c, o in zip(trainable, old_trainable)],
      [tf.where(usable, c, o)
       for c, o in zip(non_trainable, old_non_trainable)])


def build_mask_finalizer(layout: ModelLayout, weights_type, sums_type, *,
                         server_optimizer=None, rule: MaskRule = MaskRule()
                         ) -> tff.learning.templates.FinalizerProcess:
  @tff.tensorflow.computation
  def init_tf():
    return initial_state(layout, server_optimizer)

  state_type = init_tf.type_signature.result

  @tff.tensorflow.computation(state_type, weights_type, sums_type)
  def step(state, weights, sums):
    round_num = state['round_num']
    old_trainable = list(weights.trainable)
    old_non_trainable = list(weights.non_trainable)
    (candidate, non_trainable), new_masks, counts = new_global_weights(
        layout, old_trainable, old_non_trainable, sums, rule=rule,
        round_num=round_num)
    optimizer_state, candidate = server_optimizer_step(
        server_optimizer, state['optimizer'], layout, old_trainable,
        candidate, new_masks)
    new_weights = unless_no_update(sums, candidate, non_trainable,
                                   old_trainable, old_non_trainable)
    kept_masks = [new_weights.non_trainable[i] for i in layout.mask_index]
    old_masks = [old_non_trainable[i] for i in layout.mask_index]
    packed_initial, measurements = mask_measurements(
        layout, state['initial_masks'], old_masks, kept_masks, counts, sums,
        first=tf.equal(round_num, 0))
    new_state = collections.OrderedDict(
        round_num=round_num + 1, initial_masks=packed_initial,
        optimizer=optimizer_state)
    return new_state, new_weights, measurements

  return finalizer_process(init_tf, step, weights_type, sums_type)
