"""Global magnitude pruning across layers (SparsyFed's end-of-round client prune).

One ranking of |w| over all masked kernels together (torch's
`prune.global_unstructured` with `L1Unstructured`, as in the SparsyFed
authors' code): the `num_keep` largest are kept, so layer densities come out
non-uniform. Masked-out weights rank below every live one. Equal magnitudes:
the lower position in the concatenation (layer order, then row-major) is
kept. Pure TF.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def num_keep(total: int, sparsity: float) -> int:
  """N − round(S·N): the weights a global prune to sparsity S keeps (Python's
  round, half to even, as torch's `_compute_nparams_toprune` rounds the
  pruned count)."""
  return int(total) - int(round(sparsity * int(total)))


def global_magnitude_masks(kernels: Sequence[tf.Tensor],
                           masks: Sequence[tf.Tensor], keep) -> list[tf.Tensor]:
  """0/1 masks (float, the kernels' shapes) keeping the `keep` largest |w|.

  Args:
    kernels: the weights, one tensor per masked kernel.
    masks: their current masks; masked-out positions rank last (they are
      kept only when fewer than `keep` weights are live).
    keep: how many to keep in total, 0 <= keep <= Σ sizes.
  """
  flats = [tf.reshape(k, [-1]) for k in kernels]
  sizes = [int(f.shape[0]) for f in flats]
  scores = tf.concat([
      tf.where(tf.reshape(m, [-1]) > 0, tf.abs(tf.cast(f, tf.float32)), -1.0)
      for f, m in zip(flats, masks)], axis=0)
  order = tf.argsort(scores, direction='DESCENDING', stable=True)
  kept = order[:keep]
  flat_mask = tf.scatter_nd(kept[:, None], tf.ones_like(kept, tf.float32),
                            [sum(sizes)])
  out = []
  for part, k in zip(tf.split(flat_mask, sizes), kernels):
    out.append(tf.reshape(part, tf.shape(k)))
  return out
