"""The budget sub-mask rule in TensorFlow: the one a run applies.

Clients apply it inside TFF's graph and the evaluation of budget sub-models
applies it eagerly, so both take it from here. `sparsity.budgets` states the
rule and keeps its numpy model (`layer_counts`, `budget_masks`), which
`tests/sparsity/test_budgets_tf.py` checks this against, ties and k = 1
floors included. Sums and counts are float64 in the numpy model's order, so
the two agree to the weight.
"""

from __future__ import annotations

import tensorflow as tf

from tff_feddst.sparsity import masks as masks_lib


def budget_masks(kernels, masks, budget) -> tuple[list, list]:
  """(sub-masks, int32 counts k_l) of a client with float32 `budget`.

  Per layer, the k_l largest |w| of the live weights (ties to the lower
  flat index), k_l = min(live_l, max(1, floor(live_l·b·N/Σlive))), 0 for a
  layer with no live weight; N counts every kernel weight (static shapes).
  """
  live = [tf.reduce_sum(tf.cast(m > 0, tf.float64)) for m in masks]
  total = tf.add_n(live)
  n = float(sum(k.shape.num_elements() for k in kernels))
  b = tf.cast(budget, tf.float64)
  subs, counts = [], []
  for kernel, mask, l in zip(kernels, masks, live):
    k = tf.floor(l * b * n / tf.maximum(total, 1.0))
    k = tf.where(l > 0, tf.minimum(l, tf.maximum(k, 1.0)), 0.0)
    k = tf.cast(k, tf.int32)
    subs.append(masks_lib.prune_by_magnitude(kernel, mask, k))
    counts.append(k)
  return subs, counts
