"""The server step: masked mean -> union mask -> re-prune to S -> server optimizer.

`(<S@SERVER, W@SERVER, MaskedSums@SERVER> -> <S@SERVER, W@SERVER, M@SERVER>)`

The new mask of each layer keeps exactly its target number of weights, ranked
first by membership in the union of the client masks (kept by at least
`max(min_votes, 1)` clients), then by the magnitude of the masked mean, then by
the weighted votes. When the union is denser than the target this is FedDST's
magnitude re-pruning of the union; the vote tie-break decides among regrown
weights, which arrive at exactly 0. Masked-out weights are zeroed. An optional
server optimizer (FedAvgM) steps on the pseudo-gradient W - mean, as TFF's
`build_apply_optimizer_finalizer` does, and is re-masked afterwards.
"""

from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import sparsity as sparsity_lib
from tff_feddst.aggregators import masked_mean as masked_mean_lib
from tff_feddst.templates.layout import ModelLayout


def new_global_weights(layout: ModelLayout, trainable, non_trainable, sums,
                       *, min_votes: int = 0):
  """(candidate trainable, new non_trainable, new masks) before the optimizer."""
  kernels, masks, dense = layout.split(trainable, non_trainable)
  means, weights, counts, dense_means = masked_mean_lib.masked_mean(
      layout, sums, masks)
  threshold = float(max(min_votes, 1))
  new_masks = []
  for mean, w, c, n in zip(means, weights, counts, layout.live_counts):
    in_union = tf.cast(c >= threshold, tf.float32)
    new_masks.append(sparsity_lib.keep_top_k_lexicographic(
        [in_union, tf.abs(mean), w], n))
  new_kernels = [m * k for m, k in zip(new_masks, means)]
  bookkeeping = [non_trainable[i] for i in layout.bookkeeping_index]
  dense_means = [tf.cast(d, old.dtype) for d, old in zip(dense_means, dense)]
  return layout.merge(new_kernels, new_masks, dense_means, bookkeeping), new_masks


def build_mask_finalizer(layout: ModelLayout, weights_type, sums_type, *,
                         server_optimizer=None, min_votes: int = 0
                         ) -> tff.learning.templates.FinalizerProcess:
  trainable_specs = tuple(tf.TensorSpec(s.shape, s.dtype)
                          for s in layout.trainable_specs)

  @tff.tensorflow.computation
  def init_tf():
    if server_optimizer is None:
      return ()
    return server_optimizer.initialize(trainable_specs)

  @tff.federated_computation()
  def init_fn():
    return tff.federated_eval(init_tf, tff.SERVER)

  state_type = init_fn.type_signature.result.member

  @tff.tensorflow.computation(state_type, weights_type, sums_type)
  def step(state, weights, sums):
    old_trainable = list(weights.trainable)
    old_non_trainable = list(weights.non_trainable)
    (candidate, non_trainable), new_masks = new_global_weights(
        layout, old_trainable, old_non_trainable, sums, min_votes=min_votes)
    new_state = state
    if server_optimizer is not None:
      pseudo_grad = tuple(o - c for o, c in zip(old_trainable, candidate))
      new_state, stepped = server_optimizer.next(state, tuple(old_trainable),
                                                 pseudo_grad)
      candidate = list(stepped)
      for i, m in zip(layout.kernel_index, new_masks):
        candidate[i] = candidate[i] * m
    # With no usable client update the model stays where it was.
    usable = sums['total_weight'] > 0
    trainable = [tf.where(usable, c, o) for c, o in zip(candidate, old_trainable)]
    non_trainable = [tf.where(usable, c, o)
                     for c, o in zip(non_trainable, old_non_trainable)]
    new_weights = tff.learning.models.ModelWeights(trainable, non_trainable)
    kept_masks = [non_trainable[i] for i in layout.mask_index]
    old_masks = [old_non_trainable[i] for i in layout.mask_index]
    live = [tf.reduce_sum(m) for m in kept_masks]
    measurements = collections.OrderedDict(
        layer_density=tf.stack([l / float(n) for l, n in
                                zip(live, layout.kernel_sizes)]),
        density=tf.add_n(live) / float(sum(layout.kernel_sizes)),
        # How dynamic the global mask is: weights that entered it this round
        # (as many left it, since every layer keeps its exact live count).
        # (Not `old == 0`: TFF traces in graph mode, where `==` on tensors is
        # Python identity.)
        mask_swaps=tf.add_n([
            tf.reduce_sum(tf.cast(tf.logical_and(new > 0, tf.equal(old, 0.0)),
                                  tf.int64))
            for new, old in zip(kept_masks, old_masks)]),
    )
    return new_state, new_weights, measurements

  @tff.federated_computation(init_fn.type_signature.result,
                             tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(sums_type, tff.SERVER))
  def next_fn(state, weights, sums):
    new_state, new_weights, measurements = tff.federated_map(
        step, (state, weights, sums))
    return tff.templates.MeasuredProcessOutput(new_state, new_weights,
                                               measurements)

  return tff.learning.templates.FinalizerProcess(init_fn, next_fn)
