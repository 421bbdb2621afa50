"""FLASH's server step: masked mean -> stage-1 profile or JMWST top-k mask.

`(<S@SERVER, W@SERVER, MaskedSums@SERVER> -> <S@SERVER, W@SERVER, M@SERVER>)`

Babakniya et al., "Revisiting Sparsity Hunting in Federated Learning: Why
does Sparsity Consensus Matter?", TMLR 2023. The rules are
`sparsity.flash`'s; this module only places them in the round:

* Round 0 is stage 1: b_l = the mean live count of layer l over the usable
  clients' masks gives the layer profile (`layer_profile_counts`); the new
  global mask is a fresh seeded random mask with those counts and the model
  re-starts from the *initial* weights masked by it (the clients' stage-1
  weights are discarded, as FLASH does).
* Later rounds: the masked mean over the clients holding each weight
  (FLASH's `update_mode` 1; `algorithms.flash` gives every client weight 1,
  as FLASH does not weight by n_k). SPDST keeps the mask;
  JMWST takes per layer the k_l = ⌊b_l · min(1, d·N / Σ b)⌋ largest |w̄|
  (FLASH's `get_next_round_mask`, b_l as above: its 'avg').
* Per-client density budgets (`keep_unheld`): a weight of the global mask
  that no usable client uploaded keeps the server's value (as FedDST's
  budget runs), and JMWST's b_l is then the live count of that aggregate
  (FLASH's 'aggregate' rule, which its code requires for hetero clients:
  with 'avg' a round of small-budget clients would shrink the global mask to
  their size).

The state counts rounds and keeps the mask made in round 0 (after stage 1),
against which the cumulative turnover is measured. An optional server
optimizer steps on W - mean from round 1 on, re-masked.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.aggregators import masked_mean as masked_mean_lib
from tff_feddst.sparse.layout import ModelLayout
from tff_feddst.sparsity import flash as flash_lib
from tff_feddst.templates import finalizer as finalizer_lib


@dataclasses.dataclass(frozen=True)
class FlashServerRule:
  """The FLASH server (module doc).

  Attributes:
    dynamic: JMWST (the mask follows the aggregate every round); False:
      SPDST (static after stage 1).
    density: d, the global density (the masks keep at most d·N weights).
    seed: seeds the stage-1 random mask.
    initial_kernels: the unmasked initial kernels (numpy), re-masked after
      stage 1.
    initial_dense: the initial dense params (numpy), restored after stage 1.
    keep_unheld: per-client density budgets (module doc).
  """
  dynamic: bool
  density: float
  seed: int
  initial_kernels: tuple[Any, ...]
  initial_dense: tuple[Any, ...]
  keep_unheld: bool = False


def client_layer_means(counts, sums) -> list[tf.Tensor]:
  """b_l: the usable clients' mean live count per layer (float64)."""
  clients = tf.cast(sums.clients - sums.dropped_clients, tf.float64)
  return [tf.cast(tf.reduce_sum(c), tf.float64) / tf.maximum(clients, 1.0)
          for c in counts]


def stage_one_masks(layout: ModelLayout, rule: FlashServerRule, mean_live):
  """The random masks with the stage-1 layer profile (`sparsity.flash`)."""
  counts = flash_lib.layer_profile_counts(mean_live, layout.kernel_sizes,
                                          rule.density)
  return [flash_lib.random_mask(shape, counts[i], flash_lib.layer_seed(
      tf.constant([rule.seed, 0x5EED], tf.int64), i))
          for i, shape in enumerate(layout.kernel_shapes)]


def jmwst_masks(layout: ModelLayout, rule: FlashServerRule, means,
                mean_live):
  """Per layer the k_l largest |w̄| (FLASH's get_next_round_mask)."""
  if rule.keep_unheld:  # 'aggregate': the live count of the aggregate.
    b = [tf.cast(tf.math.count_nonzero(m), tf.float64) for m in means]
  else:  # 'avg'
    b = mean_live
  k = flash_lib.server_layer_counts(
      b, rule.density * float(sum(layout.kernel_sizes)))
  return [flash_lib.top_k_mask(m, k[i]) for i, m in enumerate(means)]


def new_global_weights(layout: ModelLayout, rule: FlashServerRule, trainable,
                       non_trainable, sums, round_num):
  """(candidate trainable, new non_trainable, new masks, counts, stage one)."""
  kernels, masks, dense = layout.split(trainable, non_trainable)
  means, _, counts, dense_means = masked_mean_lib.masked_mean(
      layout, sums, masks)
  if rule.keep_unheld:  # Weights no usable client uploaded keep their value.
    held = [c > 0 for c in counts]
    means = [tf.where(tf.logical_and(m > 0, tf.logical_not(h)), k, mean)
             for m, h, k, mean in zip(masks, held, kernels, means)]
  mean_live = client_layer_means(counts, sums)
  stage_one = tf.equal(round_num, 0)

  def after_stage_one():
    new_masks = stage_one_masks(layout, rule, mean_live)
    new_kernels = [m * tf.constant(k) for m, k in
                   zip(new_masks, rule.initial_kernels)]
    return new_kernels, new_masks, [tf.constant(d) for d in rule.initial_dense]

  def later_round():
    if rule.dynamic:
      new_masks = jmwst_masks(layout, rule, means, mean_live)
    else:
      new_masks = [tf.identity(m) for m in masks]
    new_kernels = [m * k for m, k in zip(new_masks, means)]
    return new_kernels, new_masks, [tf.cast(d, old.dtype) for d, old in
                                    zip(dense_means, dense)]

  new_kernels, new_masks, new_dense = tf.cond(stage_one, after_stage_one,
                                              later_round)
  bookkeeping = [non_trainable[i] for i in layout.bookkeeping_index]
  return (layout.merge(new_kernels, new_masks, new_dense, bookkeeping),
          new_masks, counts, stage_one)


def build_flash_finalizer(layout: ModelLayout, weights_type, sums_type, *,
                          rule: FlashServerRule, server_optimizer=None
                          ) -> tff.learning.templates.FinalizerProcess:
  @tff.tensorflow.computation
  def init_tf():
    return finalizer_lib.initial_state(layout, server_optimizer)

  state_type = init_tf.type_signature.result

  @tff.tensorflow.computation(state_type, weights_type, sums_type)
  def step(state, weights, sums):
    round_num = state['round_num']
    old_trainable = list(weights.trainable)
    old_non_trainable = list(weights.non_trainable)
    (candidate, non_trainable), new_masks, counts, stage_one = (
        new_global_weights(layout, rule, old_trainable, old_non_trainable,
                           sums, round_num))
    optimizer_state = state['optimizer']
    if server_optimizer is not None:  # Not on the stage-1 reset.
      stepped_state, stepped = finalizer_lib.server_optimizer_step(
          server_optimizer, optimizer_state, layout, old_trainable,
          candidate, new_masks)
      candidate = [tf.where(stage_one, c, s)
                   for c, s in zip(candidate, stepped)]
      optimizer_state = tf.nest.map_structure(
          lambda o, s: tf.where(stage_one, o, s), optimizer_state,
          stepped_state)
    new_weights = finalizer_lib.unless_no_update(
        sums, candidate, non_trainable, old_trainable, old_non_trainable)
    kept_masks = [new_weights.non_trainable[i] for i in layout.mask_index]
    old_masks = [old_non_trainable[i] for i in layout.mask_index]
    packed_initial, measurements = finalizer_lib.mask_measurements(
        layout, state['initial_masks'], old_masks, kept_masks, counts, sums,
        first=stage_one, round0_masks=kept_masks)
    measurements['stage_one'] = stage_one
    new_state = collections.OrderedDict(
        round_num=round_num + 1, initial_masks=packed_initial,
        optimizer=optimizer_state)
    return new_state, new_weights, measurements

  return finalizer_lib.finalizer_process(init_tf, step, weights_type,
                                         sums_type)


def initial_arrays(layout: ModelLayout, trainable, non_trainable):
  """(unmasked initial kernels, initial dense params) as numpy tuples."""
  kernels, _, dense = layout.split(list(trainable), list(non_trainable))
  return (tuple(np.asarray(k) for k in kernels),
          tuple(np.asarray(d) for d in dense))
