"""PruneFL's server step: masked mean -> on reconfiguration rounds, new masks.

`(<S@SERVER, W@SERVER, ImportanceSums@SERVER> -> <S@SERVER, W@SERVER, M@SERVER>)`

Jiang et al., "Model Pruning Enables Efficient Federated Learning on Edge
Devices", IEEE TNNLS 2022. Every round the new weights are the example-
weighted mean of the clients' live values (all clients hold the global mask:
FedAvg on the live weights), then the optional server optimizer. Every
round the aggregated importance (`aggregators.importance`) is added to a
running sum in the state (`importance_window`): the rounds since the last
reconfiguration, as the authors' clients accumulate theirs
(`AdaptiveClient.main`) — ours are sampled and stateless, so the server
keeps the sum. On reconfiguration rounds
(`sparsity.prunefl.is_reconfiguration_round`, with some importance in the
sum) the server runs PruneFL's rule (`sparsity.prunefl_tf.reconfigure`, the
TensorFlow copy of `sparsity.prunefl.reconfigure`) on the new weights: s =
the summed importance, t_l and c from `sparsity.prunefl.TimeModel` for a
round of the mean examples a contributing client processed in the window,
S0 = the dense params' summed importance; then the sum starts again.

Weights outside the mask keep their last server value in the state
(`dormant`), and a weight that re-enters the mask starts from it, as in the
authors' server (which adds the clients' mean delta on live entries only
and never clears the others); the global model itself holds them as 0.

The state counts rounds and keeps the round-0 mask (for the turnover), the
dormant values and the importance sum; all of it is checkpointed.
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
from tff_feddst.sparsity import prunefl
from tff_feddst.sparsity import prunefl_tf
from tff_feddst.templates import finalizer as finalizer_lib


@dataclasses.dataclass(frozen=True)
class PruneFLServerRule:
  """The PruneFL server (module doc).

  Attributes:
    interval: R_adj, rounds between reconfigurations.
    max_decrease: δ, the share of a layer's live weights that may leave.
    time_model: gives t_l and c.
    max_live: cap on the live weights (None: none).
    dormant_kernels: the values of the weights outside the initial mask
      (numpy, kernel shapes; live entries are ignored).
  """
  interval: int
  max_decrease: float
  time_model: prunefl.TimeModel
  max_live: int | None
  dormant_kernels: tuple[Any, ...]


def empty_window(layout: ModelLayout) -> collections.OrderedDict:
  """The importance summed since the last reconfiguration, none yet:
  Σ n_k s_k per kernel (flat), Σ n_k S0_k, the client-rounds and the
  examples they processed."""
  return collections.OrderedDict(
      importance=[tf.zeros([n], tf.float32) for n in layout.kernel_sizes],
      base_importance=tf.zeros([], tf.float32),
      client_rounds=tf.zeros([], tf.int32),
      examples=tf.zeros([], tf.float32))


def add_round(window, sums) -> collections.OrderedDict:
  """`window` plus this round's `aggregators.importance.ImportanceSums`."""
  return collections.OrderedDict(
      importance=[w + s for w, s in zip(window['importance'],
                                        sums.importance)],
      base_importance=window['base_importance'] + sums.base_importance,
      client_rounds=window['client_rounds'] + sums.importance_clients,
      examples=window['examples'] + sums.importance_examples)


def reconfigured_masks(rule: PruneFLServerRule, kernels, masks, window):
  """(a no-arg function giving the reconfigured masks, whether the window
  holds any importance) for the importance summed in `window` (module doc;
  `add_round`)."""
  client_rounds = tf.cast(window['client_rounds'], tf.float64)
  examples = tf.cast(window['examples'], tf.float64) / tf.maximum(
      client_rounds, 1.0)

  def reconfigure():
    return prunefl_tf.reconfigure(
        kernels, masks,
        [tf.reshape(s, tf.shape(k)) for s, k in zip(window['importance'],
                                                    kernels)],
        rule.time_model.layer_times(examples),
        base_time=rule.time_model.base_time(examples),
        max_decrease=rule.max_decrease,
        base_importance=window['base_importance'], max_live=rule.max_live)

  return reconfigure, client_rounds > 0


def build_prunefl_finalizer(layout: ModelLayout, weights_type, sums_type, *,
                            rule: PruneFLServerRule, server_optimizer=None
                            ) -> tff.learning.templates.FinalizerProcess:
  @tff.tensorflow.computation
  def init_tf():
    state = finalizer_lib.initial_state(layout, server_optimizer)
    state['dormant'] = [tf.constant(np.asarray(k, np.float32))
                        for k in rule.dormant_kernels]
    state['importance_window'] = empty_window(layout)
    return state

  state_type = init_tf.type_signature.result

  @tff.tensorflow.computation(state_type, weights_type, sums_type)
  def step(state, weights, sums):
    round_num = state['round_num']
    old_trainable = list(weights.trainable)
    old_non_trainable = list(weights.non_trainable)
    _, old_masks, old_dense = layout.split(old_trainable, old_non_trainable)
    means, _, counts, dense_means = masked_mean_lib.masked_mean(
        layout, sums.sums, old_masks)
    bookkeeping = [old_non_trainable[i] for i in layout.bookkeeping_index]
    candidate, non_trainable = layout.merge(
        [m * k for m, k in zip(old_masks, means)], old_masks,
        [tf.cast(d, o.dtype) for d, o in zip(dense_means, old_dense)],
        bookkeeping)
    optimizer_state, candidate = finalizer_lib.server_optimizer_step(
        server_optimizer, state['optimizer'], layout, old_trainable,
        candidate, old_masks)
    averaged = finalizer_lib.unless_no_update(
        sums.sums, candidate, non_trainable, old_trainable, old_non_trainable)
    kernels = [averaged.trainable[i] for i in layout.kernel_index]
    dormant = [tf.where(m > 0, k, d)
               for m, k, d in zip(old_masks, kernels, state['dormant'])]
    window = add_round(state['importance_window'], sums)
    reconfigure, have_importance = reconfigured_masks(rule, kernels,
                                                      old_masks, window)
    reconfiguring = tf.logical_and(
        prunefl_tf.is_reconfiguration_round(round_num, rule.interval),
        have_importance)
    new_masks = tf.cond(reconfiguring, reconfigure,
                        lambda: [tf.identity(m) for m in old_masks])
    next_window = tf.cond(reconfiguring, lambda: empty_window(layout),
                          lambda: window)
    new_kernels = [tf.where(m > 0, d, 0.0) for m, d in zip(new_masks, dormant)]
    trainable = list(averaged.trainable)
    non_trainable = list(averaged.non_trainable)
    for i, k in zip(layout.kernel_index, new_kernels):
      trainable[i] = k
    for i, m in zip(layout.mask_index, new_masks):
      non_trainable[i] = m
    new_weights = tff.learning.models.ModelWeights(trainable, non_trainable)
    packed_initial, measurements = finalizer_lib.mask_measurements(
        layout, state['initial_masks'], old_masks, new_masks, counts,
        sums.sums, first=tf.equal(round_num, 0))
    clients = tf.cast(sums.sums.clients - sums.sums.dropped_clients,
                      tf.float64)
    examples = tf.cast(sums.sums.total_weight, tf.float64) / tf.maximum(
        clients, 1.0)
    measurements['reconfigured'] = reconfiguring
    measurements['importance_clients'] = sums.importance_clients
    # The client-rounds of importance summed since the last reconfiguration,
    # this round's included (what a reconfiguration used).
    measurements['importance_client_rounds'] = window['client_rounds']
    # The time model's seconds for a round of the new mask (the authors'
    # `est_time`), at this round's mean examples per client.
    measurements['modelled_round_seconds'] = rule.time_model.round_time(
        [tf.reduce_sum(tf.cast(m, tf.float64)) for m in new_masks], examples)
    new_state = collections.OrderedDict(
        round_num=round_num + 1, initial_masks=packed_initial,
        optimizer=optimizer_state, dormant=dormant,
        importance_window=next_window)
    return new_state, new_weights, measurements

  return finalizer_lib.finalizer_process(init_tf, step, weights_type,
                                         sums_type)
