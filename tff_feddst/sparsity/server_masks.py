"""The server's choice of the next global mask of one layer.

FedDST's rule (Bibikar et al., Alg. 1): the union of the client masks (the
weights at least `max(min_votes, 1)` clients keep), re-pruned by the magnitude
of the masked mean back to the layer's live count; ties go to the larger
weighted vote, then the lower index.

Why that mask hardly moves: a client prunes only its smallest α_r of live
weights and regrows as many at exactly 0, while every weight some client
pruned is still kept, with a non-zero mean, by the others. Re-pruning the
union by |mean| then hands back the previous mask; a weight leaves only when
every client pruned it (1.7% of the mask in 150 rounds, docs/results.md).

`remember_old` (the reference's `--remember-old`): for the decision, a client
that does not keep a weight of the previous global mask counts with the
server's previous value for it, i.e. the ranking uses
(Σ_keep w_c v_c + v_old · Σ_other w_c) / Σ_all w_c, and every weight of the
previous mask is in the union. (The reference computes this sum but then
overwrites it with the plain masked mean before pruning; we implement what
its flag describes.) The new weights' values stay the masked mean.

Consensus regrowth (this project's rule, `regrowth_quota`): on readjusting
rounds the server reserves q = floor(α_r · live) slots of each layer for
weights *outside* the previous global mask, ranked by how many clients
regrew them (their dense-gradient votes; the most agreed-upon first), then
by |mean| (non-zero when clients readjust before their last epoch), then by
weighted votes. The remaining live − q slots follow FedDST's rule. So the
global mask exchanges up to q weights per readjusting round, chosen by the
clients' aggregated gradient evidence, as RigL does centrally, instead of
the ~0 that the union rule lets through. It costs no uplink: the masks that
carry the votes are already sent on readjusting rounds.
"""

from __future__ import annotations

import tensorflow as tf

from tff_feddst.sparsity import masks as masks_lib


def next_global_mask(prev_mask, mean, vote_weights, vote_counts, *,
                     num_live, min_votes: int = 0, remember_old: bool = False,
                     prev_kernel=None, total_weight=None, clients=None,
                     regrowth_quota=0):
  """The new 0/1 mask of one layer (float32, `prev_mask`'s shape).

  Args:
    prev_mask: the previous global mask (the one the clients received).
    mean: the masked weighted mean of the client values.
    vote_weights: per weight, the summed example weights of its keepers.
    vote_counts: per weight, the number of (usable) clients keeping it.
    num_live: live weights of the new mask (scalar int).
    min_votes: a weight is in the union with at least max(min_votes, 1)
      votes.
    remember_old: rank with the remembered mean (module doc); needs
      `prev_kernel`, `total_weight` (all usable clients' weights) and
      `clients` (their number).
    regrowth_quota: q, slots reserved for weights outside `prev_mask` (0:
      FedDST's rule). Fewer are reserved if fewer such weights have votes.
  """
  prev = tf.cast(prev_mask > 0, tf.float32)
  counts = tf.cast(vote_counts, tf.float32)
  score = mean
  if remember_old:
    total_weight = tf.cast(total_weight, tf.float32)
    others = tf.maximum(total_weight - vote_weights, 0.0)
    score = tf.math.divide_no_nan(mean * vote_weights + prev_kernel * others,
                                  total_weight)
    counts = counts + prev * (tf.cast(clients, tf.float32) - counts)
  in_union = counts >= float(max(min_votes, 1))
  keys = [in_union, tf.abs(score), tf.cast(vote_weights, tf.float32)]
  if isinstance(regrowth_quota, int) and regrowth_quota == 0:
    # FedDST's rule: no reserved slots, no extra sorts of the whole kernel.
    return masks_lib.keep_top_k_lexicographic(keys, num_live)
  candidates = (1.0 - prev) * tf.cast(vote_counts > 0, tf.float32)
  quota = tf.minimum(tf.cast(regrowth_quota, tf.int32),
                     tf.cast(tf.reduce_sum(candidates), tf.int32))
  quota = tf.minimum(quota, tf.cast(num_live, tf.int32))
  grown = masks_lib.keep_top_k_lexicographic(
      [candidates > 0, tf.cast(vote_counts, tf.float32), tf.abs(mean),
       tf.cast(vote_weights, tf.float32)], quota)
  return masks_lib.keep_top_k_lexicographic([grown > 0] + keys, num_live)
