"""The DP upload: one fixed-length float32 vector in global-mask order.

With the global mask fixed (DP mode), every client's live values line up
with the server's: kernel by kernel (the layout's order), the live entries in
row-major order, then the dense params. Its length is
Σ live counts + Σ dense sizes, the same for every client and every round, so
TFF's aggregators (clipping, DP noise) can work on it as on any tensor.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tff_feddst.sparse import codec
from tff_feddst.sparse.layout import ModelLayout


def piece_sizes(layout: ModelLayout) -> list[int]:
  """Lengths of the vector's pieces: live counts, then dense param sizes."""
  return list(layout.live_counts) + [int(np.prod(s.shape))
                                     for s in layout.dense_specs]


def length(layout: ModelLayout) -> int:
  return sum(piece_sizes(layout))


def from_payload(layout: ModelLayout, payload: codec.SparsePayload):
  """float32[length] from a payload whose values follow the global mask."""
  pieces = [tf.reshape(tf.cast(t, tf.float32), [-1])
            for t in list(payload.values) + list(payload.dense)]
  return tf.ensure_shape(tf.concat(pieces, axis=0), [length(layout)])


def add_to_weights(layout: ModelLayout, trainable, non_trainable, vector):
  """(trainable, non_trainable) + the vector, scattered into the global mask.

  Masked-out kernel entries get nothing added (they stay exactly 0);
  TF-MOT's bookkeeping variables are left as they are.
  """
  kernels, masks, dense = layout.split(trainable, non_trainable)
  parts = tf.split(vector, piece_sizes(layout))
  new_kernels = [k + tf.cast(codec.scatter_values(p, m), k.dtype)
                 for k, m, p in zip(kernels, masks, parts)]
  new_dense = [d + tf.cast(tf.reshape(p, tf.shape(d)), d.dtype)
               for d, p in zip(dense, parts[layout.num_kernels:])]
  bookkeeping = [non_trainable[i] for i in layout.bookkeeping_index]
  return layout.merge(new_kernels, masks, new_dense, bookkeeping)
